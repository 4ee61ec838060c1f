//! The verdict on a line against the head (contract §2, §2.1).
//!
//! [`place`] is the table of §2 for authentic events, one arm per row.
//! [`judge_line`] runs every check in the contract's order (too_long,
//! blank, authenticity, position) for callers that judge one line at a
//! time; the shipper runs the same two halves on separate threads.

use super::adopt::{adopt, seal, Adopted, Fields, Signer};
use super::event::{authenticate_deferring, bad_signature, Refusal, SealedEvent};
use super::seal::{self, KeyRing, SignatureCheck, SignaturePolicy};
use super::{is_blank, Hash, Head, Verdict};

/// Per-ledger rules that decide placement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainRules {
    /// The anchor must be seq 0 (config `require_genesis`).
    pub require_genesis: bool,
}

/// Where an authentic event sits against the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The next link (or the anchor): becomes the new head.
    Mirrored,
    /// Refused: `duplicate`, `fork`, `seq_gap` or `chain_break`.
    Refused { verdict: Verdict, detail: String },
}

/// Places an authentic event. `mirrored_hash_at(seq)` answers which hash
/// the mirror holds at a seq at or below the head (`None` below the anchor);
/// it is only called for `event.seq < head.seq`.
pub fn place(
    event: &SealedEvent,
    head: Option<&Head>,
    rules: ChainRules,
    mirrored_hash_at: impl FnOnce(u64) -> Option<Hash>,
) -> Placement {
    let refuse = |verdict, detail: String| Placement::Refused { verdict, detail };
    let Some(head) = head else {
        if rules.require_genesis && event.seq != 0 {
            return refuse(
                Verdict::SeqGap,
                format!(
                    "require_genesis: the first authentic event has seq {}, not 0",
                    event.seq
                ),
            );
        }
        return Placement::Mirrored;
    };
    if event.seq <= head.seq {
        let held = if event.seq == head.seq {
            Some(head.hash)
        } else {
            mirrored_hash_at(event.seq)
        };
        return match held {
            Some(h) if h == event.hash => refuse(
                Verdict::Duplicate,
                format!("seq {} already mirrored with this hash", event.seq),
            ),
            Some(h) => refuse(
                Verdict::Fork,
                format!("seq {} already mirrored as {h}", event.seq),
            ),
            None => refuse(
                Verdict::Fork,
                format!(
                    "seq {} is below the anchor: no mirrored event at that seq",
                    event.seq
                ),
            ),
        };
    }
    if event.seq > head.seq + 1 {
        return refuse(
            Verdict::SeqGap,
            format!("seq {} after head {}", event.seq, head.seq),
        );
    }
    if event.prev_hash != Some(head.hash) {
        let prev = event
            .prev_hash
            .map_or_else(|| "null".to_owned(), |h| h.to_hex());
        return refuse(
            Verdict::ChainBreak,
            format!("prev_hash {prev} != head hash {}", head.hash),
        );
    }
    Placement::Mirrored
}

/// The complete judgement of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineJudgement {
    /// Only white space: not an event, not quarantined.
    Blank,
    /// Authentic and placed as the next link.
    Mirrored(SealedEvent),
    /// Refused; `event` is present when the line was authentic.
    Refused {
        refusal: Refusal,
        event: Option<Box<SealedEvent>>,
    },
}

impl LineJudgement {
    pub fn verdict(&self) -> Option<Verdict> {
        match self {
            LineJudgement::Blank => None,
            LineJudgement::Mirrored(_) => Some(Verdict::Mirrored),
            LineJudgement::Refused { refusal, .. } => Some(refusal.verdict),
        }
    }
}

/// What a line is on its own, before its place in the chain is known: the
/// first four checks of §2.1, which need no head. Lines can be examined in
/// parallel; placing them ([`Chain::place_examined`]) is sequential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Examined {
    Blank,
    Authentic(SealedEvent),
    /// A plain line of an adopted ledger, sealed where it is placed.
    Adopted(Adopted),
    Refused(Refusal),
}

/// The first four checks of §2.1 (`too_long`, `malformed`, `hash_mismatch`,
/// the signature) on one complete line of `length` bytes (the line may be
/// given truncated when it is too long: only its length matters then).
pub fn examine(
    line: &[u8],
    length: u64,
    max_line_bytes: u64,
    policy: SignaturePolicy,
    keys: &KeyRing,
    scratch: &mut Vec<u8>,
) -> Examined {
    let (examined, check) = examine_deferring(line, length, max_line_bytes, policy, keys, scratch);
    match check {
        Some(check) => settle(examined, check.passes()),
        None => examined,
    }
}

/// [`examine`] on each of many lines, in order, with the same verdicts; the
/// strict signature checks of all of them are finished together, which
/// shares one field inversion among them (`seal::finish_checks`).
pub fn examine_each<'l>(
    lines: impl IntoIterator<Item = (&'l [u8], u64)>,
    max_line_bytes: u64,
    policy: SignaturePolicy,
    keys: &KeyRing,
    scratch: &mut Vec<u8>,
    out: &mut Vec<Examined>,
) {
    let mut checks = Vec::new();
    let mut checked_lines = Vec::new();
    for (line, length) in lines {
        let (examined, check) =
            examine_deferring(line, length, max_line_bytes, policy, keys, scratch);
        if let Some(check) = check {
            checks.push(check);
            checked_lines.push(out.len());
        }
        out.push(examined);
    }
    if checks.is_empty() {
        return;
    }
    for (i, passed) in checked_lines.into_iter().zip(seal::finish_checks(&checks)) {
        if !passed {
            let examined = std::mem::replace(&mut out[i], Examined::Blank);
            out[i] = settle(examined, false);
        }
    }
}

/// [`examine`] for a line of a plain JSON log (`format = "plain"`):
/// `too_long`, blank, then `malformed` unless it is one I-JSON object,
/// which becomes the event [`adopt`] makes of it (sealed where it is
/// placed). `read_at_millis`: when it was read, its `ts` when it names
/// none.
pub fn examine_plain(
    line: &[u8],
    length: u64,
    max_line_bytes: u64,
    fields: &Fields,
    read_at_millis: i64,
    scratch: &mut Vec<u8>,
) -> Examined {
    if let Some(early) = too_long_or_blank(line, length, max_line_bytes) {
        return early;
    }
    match adopt(line, fields, read_at_millis, scratch) {
        Ok(adopted) => Examined::Adopted(adopted),
        Err(detail) => Examined::Refused(Refusal {
            verdict: Verdict::Malformed,
            detail,
            seq: None,
            hash: None,
        }),
    }
}

/// The first checks of any line: over the limit (`too_long`), or only
/// white space (not an event).
fn too_long_or_blank(line: &[u8], length: u64, max_line_bytes: u64) -> Option<Examined> {
    if length > max_line_bytes {
        return Some(Examined::Refused(Refusal {
            verdict: Verdict::TooLong,
            detail: format!("{length} bytes > {max_line_bytes}"),
            seq: None,
            hash: None,
        }));
    }
    is_blank(line).then_some(Examined::Blank)
}

/// `examine`, but an `Authentic` answer with a check is authentic only if
/// the check passes ([`settle`]).
fn examine_deferring(
    line: &[u8],
    length: u64,
    max_line_bytes: u64,
    policy: SignaturePolicy,
    keys: &KeyRing,
    scratch: &mut Vec<u8>,
) -> (Examined, Option<SignatureCheck>) {
    if let Some(early) = too_long_or_blank(line, length, max_line_bytes) {
        return (early, None);
    }
    match authenticate_deferring(line, policy, keys, scratch) {
        Ok((event, check)) => (Examined::Authentic(event), check),
        Err(refusal) => (Examined::Refused(refusal), None),
    }
}

/// The answer of a deferred signature check applied to its line.
fn settle(examined: Examined, signature_passed: bool) -> Examined {
    match examined {
        Examined::Authentic(event) if !signature_passed => Examined::Refused(bad_signature(&event)),
        other => other,
    }
}

/// An examined line placed against the head: the rest of §2.1.
fn judge_examined(
    examined: Examined,
    head: Option<&Head>,
    rules: ChainRules,
    signer: Option<&Signer>,
    mirrored_hash_at: impl FnOnce(u64) -> Option<Hash>,
) -> LineJudgement {
    let event = match examined {
        Examined::Blank => return LineJudgement::Blank,
        Examined::Refused(refusal) => {
            return LineJudgement::Refused {
                refusal,
                event: None,
            }
        }
        Examined::Authentic(event) => event,
        // Its place is the head's next: it has no seq of its own to refuse.
        Examined::Adopted(adopted) => return LineJudgement::Mirrored(seal(adopted, head, signer)),
    };
    match place(&event, head, rules, mirrored_hash_at) {
        Placement::Mirrored => LineJudgement::Mirrored(event),
        Placement::Refused { verdict, detail } => LineJudgement::Refused {
            refusal: Refusal {
                verdict,
                detail,
                seq: Some(event.seq),
                hash: Some(event.hash),
            },
            event: Some(Box::new(event)),
        },
    }
}

/// Judges one complete line of `length` bytes (the line may be given
/// truncated when it is too long: only its length matters then).
#[allow(clippy::too_many_arguments)] // each is one of the contract's inputs
pub fn judge_line(
    line: &[u8],
    length: u64,
    max_line_bytes: u64,
    head: Option<&Head>,
    policy: SignaturePolicy,
    keys: &KeyRing,
    rules: ChainRules,
    mirrored_hash_at: impl FnOnce(u64) -> Option<Hash>,
    scratch: &mut Vec<u8>,
) -> LineJudgement {
    let examined = examine(line, length, max_line_bytes, policy, keys, scratch);
    judge_examined(examined, head, rules, None, mirrored_hash_at)
}

/// One ledger's chain as a judge sees it: the head and anchor, and the
/// rules lines are judged by. [`Chain::judge`] advances the head when a line
/// is mirrored. Pure: the caller supplies lookups of mirrored hashes.
#[derive(Debug, Clone)]
pub struct Chain {
    pub head: Option<Head>,
    pub anchor: Option<Head>,
    pub policy: SignaturePolicy,
    pub keys: KeyRing,
    pub rules: ChainRules,
    pub max_line_bytes: u64,
    /// Signs the lines a plain ledger adopts (see [`Chain::signing`]).
    signer: Option<Signer>,
    scratch: Vec<u8>,
}

impl Chain {
    pub fn new(
        head: Option<Head>,
        anchor: Option<Head>,
        policy: SignaturePolicy,
        keys: KeyRing,
        rules: ChainRules,
        max_line_bytes: u64,
    ) -> Chain {
        Chain {
            head,
            anchor,
            policy,
            keys,
            rules,
            max_line_bytes,
            signer: None,
            scratch: Vec::with_capacity(1024),
        }
    }

    /// The chain with adopted lines signed by `signer` as they are sealed
    /// (the signature covers the hash, so it is made where the hash is).
    pub fn signing(mut self, signer: Option<Signer>) -> Chain {
        self.signer = signer;
        self
    }

    /// Judges a complete line of `length` bytes and, when it is mirrored,
    /// makes it the head (and the anchor, if there was none).
    pub fn judge(
        &mut self,
        line: &[u8],
        length: u64,
        mirrored_hash_at: impl FnOnce(u64) -> Option<Hash>,
    ) -> LineJudgement {
        let judgement = judge_line(
            line,
            length,
            self.max_line_bytes,
            self.head.as_ref(),
            self.policy,
            &self.keys,
            self.rules,
            mirrored_hash_at,
            &mut self.scratch,
        );
        self.advance(&judgement);
        judgement
    }

    /// Places a line examined elsewhere (see [`examine`]) against the head,
    /// exactly as [`Chain::judge`] would have judged it.
    pub fn place_examined(
        &mut self,
        examined: Examined,
        mirrored_hash_at: impl FnOnce(u64) -> Option<Hash>,
    ) -> LineJudgement {
        let judgement = judge_examined(
            examined,
            self.head.as_ref(),
            self.rules,
            self.signer.as_ref(),
            mirrored_hash_at,
        );
        self.advance(&judgement);
        judgement
    }

    fn advance(&mut self, judgement: &LineJudgement) {
        if let LineJudgement::Mirrored(event) = judgement {
            let head = Head {
                seq: event.seq,
                hash: event.hash,
            };
            self.head = Some(head);
            self.anchor.get_or_insert(head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, prev: Option<u8>, hash: u8) -> SealedEvent {
        SealedEvent {
            seq,
            ts: "2026-01-01T00:00:00Z".into(),
            event_type: "t".into(),
            id: None,
            payload: "null".into(),
            extra: None,
            prev_hash: prev.map(|b| Hash([b; 32])),
            hash: Hash([hash; 32]),
            key_id: None,
            sig: None,
            line_sha256: None,
        }
    }

    fn head(seq: u64, hash: u8) -> Head {
        Head {
            seq,
            hash: Hash([hash; 32]),
        }
    }

    fn verdict(p: Placement) -> Verdict {
        match p {
            Placement::Mirrored => Verdict::Mirrored,
            Placement::Refused { verdict, .. } => verdict,
        }
    }

    const OPEN: ChainRules = ChainRules {
        require_genesis: false,
    };
    const GENESIS: ChainRules = ChainRules {
        require_genesis: true,
    };

    #[test]
    fn next_link_is_mirrored() {
        let p = place(&ev(5, Some(4), 5), Some(&head(4, 4)), OPEN, |_| None);
        assert_eq!(p, Placement::Mirrored);
    }

    #[test]
    fn first_authentic_event_anchors_unless_genesis_required() {
        assert_eq!(
            verdict(place(&ev(5000, Some(1), 9), None, OPEN, |_| None)),
            Verdict::Mirrored
        );
        assert_eq!(
            verdict(place(&ev(5000, Some(1), 9), None, GENESIS, |_| None)),
            Verdict::SeqGap
        );
        assert_eq!(
            verdict(place(&ev(0, None, 9), None, GENESIS, |_| None)),
            Verdict::Mirrored
        );
    }

    #[test]
    fn duplicate_is_quarantined_not_halted() {
        let v = verdict(place(&ev(2, Some(1), 2), Some(&head(5, 5)), OPEN, |s| {
            (s == 2).then_some(Hash([2; 32]))
        }));
        assert_eq!(v, Verdict::Duplicate);
        assert!(!v.halts());
        // The head itself written twice.
        assert_eq!(
            verdict(place(&ev(5, Some(4), 5), Some(&head(5, 5)), OPEN, |_| None)),
            Verdict::Duplicate
        );
    }

    #[test]
    fn fork_halts() {
        let v = verdict(place(&ev(3, Some(2), 33), Some(&head(5, 5)), OPEN, |_| {
            Some(Hash([3; 32]))
        }));
        assert_eq!(v, Verdict::Fork);
        assert!(v.halts());
        // Below the anchor there is nothing to compare with: fork.
        assert_eq!(
            verdict(place(
                &ev(10, Some(9), 10),
                Some(&head(5010, 1)),
                OPEN,
                |_| None
            )),
            Verdict::Fork
        );
    }

    #[test]
    fn seq_gap_halts() {
        let v = verdict(place(&ev(6, Some(4), 6), Some(&head(4, 4)), OPEN, |_| None));
        assert_eq!(v, Verdict::SeqGap);
        assert!(v.halts());
    }

    #[test]
    fn chain_break_halts() {
        let v = verdict(place(&ev(5, Some(9), 5), Some(&head(4, 4)), OPEN, |_| None));
        assert_eq!(v, Verdict::ChainBreak);
        assert!(v.halts());
    }

    #[test]
    fn too_long_comes_first_and_blank_is_skipped() {
        let keys = KeyRing::default();
        let j = judge_line(
            b"garbage",
            11,
            10,
            None,
            SignaturePolicy::Off,
            &keys,
            OPEN,
            |_| None,
            &mut Vec::new(),
        );
        assert_eq!(j.verdict(), Some(Verdict::TooLong));
        let j = judge_line(
            b" \t\r",
            3,
            10,
            None,
            SignaturePolicy::Off,
            &keys,
            OPEN,
            |_| None,
            &mut Vec::new(),
        );
        assert_eq!(j, LineJudgement::Blank);
        let j = judge_line(
            b"x",
            1,
            1,
            None,
            SignaturePolicy::Off,
            &keys,
            OPEN,
            |_| None,
            &mut Vec::new(),
        );
        assert_eq!(
            j.verdict(),
            Some(Verdict::Malformed),
            "a line of exactly the limit is judged"
        );
    }
}
