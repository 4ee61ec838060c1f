//! The witness client (C2SP `tlog-witness`): one `add-checkpoint` POST
//! with a consistency proof from the size the witness last cosigned, and
//! its answer read as the protocol says: 200 with cosignature lines
//! (verified against the witness's key before they are kept), 409 with
//! the size the witness holds (`text/x.tlog.size`), anything else a
//! refusal with its status and reason.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

use crate::config::Witness;
use crate::ledger::note::{parse_signature_line, Note, NoteSignature};
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

/// Sends one `add-checkpoint` and reads the answer. `Err`: the witness
/// could not be reached or did not speak HTTP.
pub async fn add_checkpoint(
    witness: &Witness,
    body: &AddCheckpoint,
    checkpoint: &Note,
    timeout: Duration,
) -> Result<Answer, String> {
    let (status, content_type, text) =
        tokio::time::timeout(timeout, post(&witness.url, body.to_text()))
            .await
            .map_err(|_| format!("no answer within {} s", timeout.as_secs()))??;
    Ok(match status {
        200 => {
            let mut note = checkpoint.clone();
            note.signatures.clear();
            for line in text.split_inclusive('\n') {
                let sig: NoteSignature = parse_signature_line(line)
                    .map_err(|e| format!("200 with an answer that is not signature lines: {e}"))?;
                note.signatures.push(sig);
            }
            match note.verify(&witness.vkey) {
                Ok(Some(timestamp)) => {
                    let line = note
                        .signatures
                        .iter()
                        .find(|s| s.name == witness.vkey.name && s.id == witness.vkey.id)
                        .map(|s| s.line.clone())
                        .unwrap_or_default();
                    Answer::Cosigned { line, timestamp }
                }
                Ok(None) => Answer::Refused(
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
    })
}

/// POST `<prefix>/add-checkpoint` over HTTP/1.1: (status, content type, body).
async fn post(prefix: &str, body: String) -> Result<(u16, String, String), String> {
    let uri: Uri = format!("{prefix}/add-checkpoint")
        .parse()
        .map_err(|e| format!("bad witness URL {prefix}: {e}"))?;
    let host = uri.host().ok_or("the witness URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP with {host}:{port}: {e}"))?;
    let driving = tokio::spawn(conn);
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
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending to {host}:{port}: {e}"))?;
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
