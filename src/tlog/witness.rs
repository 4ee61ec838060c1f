//! The witness client (C2SP `tlog-witness`): one `add-checkpoint` POST
//! with a consistency proof from the size the witness last cosigned, and
//! its answer read as the protocol says: 200 with cosignature lines
//! (verified against the witness's key before they are kept), 409 with
//! the size the witness holds (`text/x.tlog.size`), anything else a
//! refusal with its status and reason. An `https://` witness is reached
//! over TLS, its certificate checked against its `ca_file` or the system's
//! trust store (the cosignature is what is trusted; TLS keeps the
//! checkpoints' traffic private and the witness's answer from being
//! suppressed by whoever is on the path).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use crate::config::Witness;
use crate::ledger::note::{parse_signature_line, Note};
use crate::ledger::tlog::AddCheckpoint;

/// Bytes of an answer read, at most.
const MAX_ANSWER: usize = 64 * 1024;

/// What a witness answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Its cosignature, verified: the line and its timestamp.
    Cosigned { line: String, timestamp: u64 },
    /// 409: the size of the latest checkpoint it cosigned.
    HoldsSize(u64),
    /// Anything else: why, as it said it.
    Refused(String),
}

/// One witness and how it is reached.
#[derive(Clone)]
pub struct WitnessClient {
    pub witness: Witness,
    /// For `https://`: the TLS client with the witness's trust roots.
    tls: Option<TlsConnector>,
}

impl WitnessClient {
    /// Loads an https witness's trust roots. `Err`: why its CA file or the
    /// system's trust store cannot be used.
    pub fn new(witness: &Witness) -> Result<WitnessClient, crate::tls::TlsError> {
        let tls = if witness.url.starts_with("https://") {
            let roots = match &witness.ca_file {
                Some(path) => crate::tls::load_roots(path)?,
                None => crate::tls::system_roots()?,
            };
            Some(TlsConnector::from(Arc::new(crate::tls::http_client(
                roots,
            )?)))
        } else {
            None
        };
        Ok(WitnessClient {
            witness: witness.clone(),
            tls,
        })
    }

    /// Sends one `add-checkpoint` and reads the answer. `Err`: the witness
    /// could not be reached or did not speak HTTP.
    pub async fn add_checkpoint(
        &self,
        body: &AddCheckpoint,
        checkpoint: &Note,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let (status, content_type, text) = tokio::time::timeout(timeout, self.post(body.to_text()))
            .await
            .map_err(|_| format!("no answer within {} s", timeout.as_secs()))??;
        Ok(read_answer(
            &self.witness,
            checkpoint,
            status,
            &content_type,
            &text,
        ))
    }

    /// POST `<prefix>/add-checkpoint` over HTTP/1.1, in TLS for https:
    /// (status, content type, body).
    async fn post(&self, body: String) -> Result<(u16, String, String), String> {
        let prefix = &self.witness.url;
        let uri: Uri = format!("{prefix}/add-checkpoint")
            .parse()
            .map_err(|e| format!("bad witness URL {prefix}: {e}"))?;
        let host = uri.host().ok_or("the witness URL has no host")?.to_owned();
        let bare_host = host.trim_matches(['[', ']']).to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let stream = tokio::net::TcpStream::connect((bare_host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or(host.clone());
        let request = Request::builder()
            .method(Method::POST)
            .uri(
                uri.path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/add-checkpoint"),
            )
            .header(HOST, authority)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let place = format!("{host}:{port}");
        match &self.tls {
            None => exchange(stream, request, &place).await,
            Some(tls) => {
                let name = ServerName::try_from(bare_host)
                    .map_err(|e| format!("the witness URL's host {host}: {e}"))?;
                let stream = tls
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS with {place}: {e}"))?;
                exchange(stream, request, &place).await
            }
        }
    }
}

/// One HTTP/1.1 request and its answer on an open connection.
async fn exchange<S>(
    io: S,
    request: Request<Full<Bytes>>,
    place: &str,
) -> Result<(u16, String, String), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP with {place}: {e}"))?;
    let driving = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending to {place}: {e}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    driving.abort();
    Ok((
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// What the witness's answer means.
fn read_answer(
    witness: &Witness,
    checkpoint: &Note,
    status: u16,
    content_type: &str,
    text: &str,
) -> Answer {
    match status {
        200 => {
            let mut note = checkpoint.clone();
            note.signatures.clear();
            for line in text.split_inclusive('\n') {
                match parse_signature_line(line) {
                    Ok(sig) => note.signatures.push(sig),
                    Err(e) => {
                        return Answer::Refused(format!(
                            "200 with an answer that is not signature lines: {e}"
                        ))
                    }
                }
            }
            match note.verified_by(&witness.vkey) {
                // Exactly the line that verified is kept: a witness that
                // answers an invalid line before a valid one for its key
                // must not get the invalid one stored and served.
                Ok((sig, Some(timestamp))) => Answer::Cosigned {
                    line: sig.line.clone(),
                    timestamp,
                },
                Ok((_, None)) => Answer::Refused(
                    "200, but the signature is not a timestamped cosignature".into(),
                ),
                Err(e) => Answer::Refused(format!("200, but {e}")),
            }
        }
        409 if content_type.starts_with("text/x.tlog.size") => match text.trim().parse() {
            Ok(size) => Answer::HoldsSize(size),
            Err(_) => Answer::Refused(format!(
                "409 with a size that is not a number: {:?}",
                text.trim()
            )),
        },
        _ => Answer::Refused(format!(
            "{status}: {}",
            text.trim().chars().take(300).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD as STANDARD_B64;
    use base64::Engine as _;
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::ledger::note::{cosign, VerifierKey, COSIGNATURE_V1};

    const TEXT: &str = "example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

    fn witness(key: &SigningKey) -> Witness {
        Witness {
            url: "http://127.0.0.1:1".into(),
            vkey: VerifierKey::of("w1", COSIGNATURE_V1, key),
            ca_file: None,
        }
    }

    fn checkpoint() -> Note {
        Note {
            text: TEXT.into(),
            signatures: Vec::new(),
        }
    }

    #[test]
    fn only_the_line_that_verifies_is_kept_when_an_invalid_one_comes_first() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let good = cosign(TEXT, "w1", &key, 1_700_000_000);
        // The same name and key id, a zero signature.
        let mut raw = [0u8; 76];
        raw[..4].copy_from_slice(&good.id.to_be_bytes());
        let bogus = format!("\u{2014} w1 {}\n", STANDARD_B64.encode(raw));
        let answer = format!("{bogus}{}", good.line);
        match read_answer(&witness(&key), &checkpoint(), 200, "text/plain", &answer) {
            Answer::Cosigned { line, timestamp } => {
                assert_eq!(line, good.line);
                assert_eq!(timestamp, 1_700_000_000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_with_no_valid_line_is_a_refusal() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let other = SigningKey::from_bytes(&[4; 32]);
        let wrong_key = cosign(TEXT, "w1", &other, 1_700_000_000);
        let answer = read_answer(
            &witness(&key),
            &checkpoint(),
            200,
            "text/plain",
            &wrong_key.line,
        );
        assert!(matches!(answer, Answer::Refused(_)), "{answer:?}");
    }
}
