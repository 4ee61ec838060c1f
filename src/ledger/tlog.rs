//! The text formats of the verifiable log (contract §7): the checkpoint
//! body (C2SP `tlog-checkpoint`), the offline proof (`tlog-proof`,
//! `c2sp.org/tlog-proof@v1`) and the body of a witness's
//! `add-checkpoint` (`tlog-witness`), which is also how `prove
//! --consistency` writes a consistency proof. Pure: text in, values out.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::note::{Note, NoteError};
use super::Hash;

/// The first line of a `tlog-proof` file.
pub const PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Consistency proofs longer than this are refused (as `tlog-witness`
/// requires of clients).
pub const MAX_PROOF_HASHES: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Note(#[from] NoteError),
}

fn malformed(why: impl Into<String>) -> FormatError {
    FormatError::Malformed(why.into())
}

/// A decimal with no leading zero (but `0`).
fn parse_decimal(text: &str, what: &str) -> Result<u64, FormatError> {
    let ok = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    ok.then(|| text.parse().ok()).flatten().ok_or_else(|| {
        malformed(format!(
            "{what} {text:?} is not a decimal without leading zeros"
        ))
    })
}

/// A base64 SHA-256 hash.
pub fn parse_hash(text: &str) -> Result<Hash, FormatError> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| malformed(format!("{text:?} is not base64")))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| malformed(format!("{text:?} is not a 32-byte hash")))?;
    Ok(Hash(bytes))
}

pub fn hash_base64(h: &Hash) -> String {
    STANDARD.encode(h.0)
}

/// A checkpoint: the origin, the tree size and its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines after the root (ledgertail writes none; kept when read).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: origin, size and root lines, each ending in LF.
    pub fn body(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            hash_base64(&self.root)
        );
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    /// Parses a note text as a checkpoint.
    pub fn parse(text: &str) -> Result<Checkpoint, FormatError> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("a checkpoint ends with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(malformed("the checkpoint's origin line is empty"));
        }
        let size = parse_decimal(lines.next().unwrap_or_default(), "the checkpoint's size")?;
        let root = parse_hash(lines.next().unwrap_or_default())?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(malformed("a checkpoint's extension line is empty"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// A signed checkpoint: the note and the checkpoint its text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub note: Note,
    pub checkpoint: Checkpoint,
}

impl SignedCheckpoint {
    pub fn parse(text: &str) -> Result<SignedCheckpoint, FormatError> {
        let note = Note::parse(text)?;
        let checkpoint = Checkpoint::parse(&note.text)?;
        Ok(SignedCheckpoint { note, checkpoint })
    }
}

fn hash_lines(out: &mut String, hashes: &[Hash]) {
    for h in hashes {
        out.push_str(&hash_base64(h));
        out.push('\n');
    }
}

/// Reads hash lines up to the first empty line; returns them and the rest.
fn take_hashes<'a>(
    lines: &mut std::str::SplitInclusive<'a, char>,
) -> Result<Vec<Hash>, FormatError> {
    let mut hashes = Vec::new();
    for line in lines.by_ref() {
        let line = line
            .strip_suffix('\n')
            .ok_or_else(|| malformed("a proof line does not end with a newline"))?;
        if line.is_empty() {
            return Ok(hashes);
        }
        if hashes.len() >= 64 {
            return Err(malformed("more than 64 proof hashes"));
        }
        hashes.push(parse_hash(line)?);
    }
    Err(malformed("no empty line before the checkpoint"))
}

/// An offline inclusion proof (`c2sp.org/tlog-proof@v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Opaque data: ledgertail puts the event's canonical line here.
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub hashes: Vec<Hash>,
    /// The signed checkpoint, verbatim, with its cosignatures.
    pub checkpoint: String,
}

impl InclusionProof {
    pub fn to_text(&self) -> String {
        let mut out = format!("{PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", STANDARD.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        hash_lines(&mut out, &self.hashes);
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    pub fn parse(text: &str) -> Result<InclusionProof, FormatError> {
        let mut lines = text.split_inclusive('\n');
        if lines.next() != Some("c2sp.org/tlog-proof@v1\n") {
            return Err(malformed(format!("the first line is not {PROOF_HEADER}")));
        }
        let mut line = lines.next().unwrap_or_default();
        let mut extra = None;
        if let Some(data) = line.strip_prefix("extra ") {
            let data = data
                .strip_suffix('\n')
                .ok_or_else(|| malformed("the extra line does not end with a newline"))?;
            extra = Some(
                STANDARD
                    .decode(data)
                    .map_err(|_| malformed("the extra line is not base64"))?,
            );
            line = lines.next().unwrap_or_default();
        }
        let index = line
            .strip_prefix("index ")
            .and_then(|l| l.strip_suffix('\n'))
            .ok_or_else(|| malformed("no `index N` line"))?;
        let index = parse_decimal(index, "the index")?;
        let hashes = take_hashes(&mut lines)?;
        let checkpoint: String = lines.collect();
        Ok(InclusionProof {
            extra,
            index,
            hashes,
            checkpoint,
        })
    }
}

/// The body of a witness's `add-checkpoint` request: the old size, a
/// consistency proof from it, and the new signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old: u64,
    pub hashes: Vec<Hash>,
    pub checkpoint: String,
}

impl AddCheckpoint {
    pub fn to_text(&self) -> String {
        let mut out = format!("old {}\n", self.old);
        hash_lines(&mut out, &self.hashes);
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    pub fn parse(text: &str) -> Result<AddCheckpoint, FormatError> {
        let mut lines = text.split_inclusive('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(|l| l.strip_suffix('\n'))
            .ok_or_else(|| malformed("the first line is not `old N`"))?;
        let old = parse_decimal(old, "the old size")?;
        let hashes = take_hashes(&mut lines)?;
        if hashes.len() > MAX_PROOF_HASHES {
            return Err(malformed("more than 63 consistency proof hashes"));
        }
        let checkpoint: String = lines.collect();
        Ok(AddCheckpoint {
            old,
            hashes,
            checkpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKPOINT: &str = "example.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n\u{2014} example.com/fancylog hI2DJw0000000000000000000000000000000000000000000000000000000000000000000000000000000000000=\n";

    #[test]
    fn the_published_proof_layout_round_trips() {
        let proof = InclusionProof {
            extra: Some(b"age-v1.2.1-darwin-arm64.tar.gz".to_vec()),
            index: 73894,
            hashes: vec![Hash([1; 32]), Hash([2; 32])],
            checkpoint: CHECKPOINT.into(),
        };
        let text = proof.to_text();
        assert!(text.starts_with(
            "c2sp.org/tlog-proof@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\nindex 73894\n"
        ));
        assert_eq!(InclusionProof::parse(&text).unwrap(), proof);
        let signed = SignedCheckpoint::parse(CHECKPOINT).unwrap();
        assert_eq!(signed.checkpoint.size, 109482);
        assert_eq!(signed.checkpoint.origin, "example.com/fancylog");
        assert_eq!(
            Checkpoint::parse(&signed.checkpoint.body()).unwrap(),
            signed.checkpoint
        );
        let no_extra = InclusionProof {
            extra: None,
            hashes: vec![],
            ..proof
        };
        assert_eq!(
            InclusionProof::parse(&no_extra.to_text()).unwrap(),
            no_extra
        );
    }

    #[test]
    fn add_checkpoint_bodies_round_trip() {
        let body = AddCheckpoint {
            old: 20852014,
            hashes: vec![Hash([9; 32])],
            checkpoint: CHECKPOINT.into(),
        };
        assert_eq!(AddCheckpoint::parse(&body.to_text()).unwrap(), body);
        let zero = AddCheckpoint {
            old: 0,
            hashes: vec![],
            checkpoint: CHECKPOINT.into(),
        };
        assert!(zero
            .to_text()
            .starts_with("old 0\n\nexample.com/fancylog\n"));
    }

    #[test]
    fn malformed_texts_are_refused() {
        for bad in [
            "example.com/log\n01\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n",
            "example.com/log\n1\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi0=\n",
            "\n1\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n",
            "example.com/log\n1\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "c2sp.org/tlog-proof@v2\nindex 1\n\n",
            "c2sp.org/tlog-proof@v1\nindex -1\n\n",
            "c2sp.org/tlog-proof@v1\nindex 1\nnot base64\n\n",
            "c2sp.org/tlog-proof@v1\nindex 1\n",
        ] {
            assert!(InclusionProof::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AddCheckpoint::parse("old 1\n").is_err());
        assert!(AddCheckpoint::parse("new 1\n\n").is_err());
    }
}
