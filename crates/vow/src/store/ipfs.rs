//! A client for the Kubo RPC API (`/api/v0`), in the dialect both Kubo and js-ipfs accept:
//! the legacy `format=` parameter for codecs, non-recursive pins for repo blocks, and a
//! `timeout` on every read so a missing block cannot hang a request.

use std::time::Duration;

use atproto::Cid;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum IpfsError {
    /// The node could not be reached or did not answer in time.
    #[error("IPFS node unreachable: {0}")]
    Unreachable(String),
    /// The node answered with an error.
    #[error("IPFS node error: {0}")]
    Node(String),
    /// The node answered with something we did not expect (a wrong CID, bad JSON).
    #[error("unexpected answer from the IPFS node: {0}")]
    Protocol(String),
}

#[derive(Clone)]
pub struct Kubo {
    http: reqwest::Client,
    api: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct NodeError {
    #[serde(rename = "Message")]
    message: String,
}

/// js-ipfs refuses multipart parts without a content type.
fn octet_stream(part: reqwest::multipart::Part, name: &'static str) -> reqwest::multipart::Part {
    part.file_name(name).mime_str("application/octet-stream").expect("a valid MIME type")
}

fn codec_name(codec: u64) -> Option<&'static str> {
    match codec {
        atproto::cid::DAG_CBOR => Some("dag-cbor"),
        atproto::cid::RAW => Some("raw"),
        _ => None,
    }
}

impl Kubo {
    /// `node_url` is the node's RPC address, e.g. `http://127.0.0.1:5001`. `timeout` bounds
    /// every call and is passed to the node for reads.
    pub fn new(node_url: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Self { http, api: format!("{}/api/v0", node_url.trim_end_matches('/')), timeout }
    }

    fn timeout_arg(&self) -> String {
        format!("{}ms", self.timeout.as_millis())
    }

    async fn post(
        &self,
        call: &str,
        query: &[(&str, &str)],
        form: Option<reqwest::multipart::Form>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, IpfsError> {
        let mut req = self.http.post(format!("{}/{call}", self.api)).query(query);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(form) = form {
            req = req.multipart(form);
        }
        let started = std::time::Instant::now();
        let sent = req.send().await;
        metrics::histogram!("vow_ipfs_call_seconds", "call" => call.to_owned()).record(started.elapsed().as_secs_f64());
        let failed = || metrics::counter!("vow_ipfs_errors_total", "call" => call.to_owned()).increment(1);
        let resp = sent.map_err(|e| {
            failed();
            IpfsError::Unreachable(format!("{call}: {e}"))
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        failed();
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<NodeError>(&body).map(|e| e.message).unwrap_or(body);
        Err(IpfsError::Node(format!("{call} ({status}): {message}")))
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        call: &str,
        query: &[(&str, &str)],
        form: Option<reqwest::multipart::Form>,
    ) -> Result<T, IpfsError> {
        let resp = self.post(call, query, form, Some(self.timeout)).await?;
        let body = resp.bytes().await.map_err(|e| IpfsError::Unreachable(format!("{call}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| IpfsError::Protocol(format!("{call}: {e}")))
    }

    /// The node's version string; used by the health check.
    pub async fn version(&self) -> Result<String, IpfsError> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(rename = "Version")]
            version: String,
        }
        Ok(self.json::<Version>("version", &[], None).await?.version)
    }

    /// Stores one block under its codec with sha2-256 and checks the node computed `cid`.
    pub async fn block_put(&self, cid: &Cid, bytes: Vec<u8>) -> Result<(), IpfsError> {
        #[derive(Deserialize)]
        struct Put {
            #[serde(rename = "Key")]
            key: String,
        }
        let format = codec_name(cid.codec())
            .ok_or_else(|| IpfsError::Protocol(format!("no IPFS format for the codec of {cid}")))?;
        let form =
            reqwest::multipart::Form::new().part("file", octet_stream(reqwest::multipart::Part::bytes(bytes), "block"));
        let put: Put =
            self.json("block/put", &[("format", format), ("mhtype", "sha2-256"), ("mhlen", "32")], Some(form)).await?;
        let got = Cid::try_from(put.key.as_str()).map_err(|e| IpfsError::Protocol(format!("block/put key: {e}")))?;
        if got != *cid {
            return Err(IpfsError::Protocol(format!("block/put stored {got}, expected {cid}")));
        }
        Ok(())
    }

    /// Stores every block of a CAR in one call, pinning nothing (a recursive pin of the root
    /// would follow links to blobs and older blocks the node may not hold). Callers pin after.
    pub async fn dag_import(&self, car: Vec<u8>) -> Result<(), IpfsError> {
        let form =
            reqwest::multipart::Form::new().part("file", octet_stream(reqwest::multipart::Part::bytes(car), "car"));
        self.post("dag/import", &[("pin-roots", "false")], Some(form), Some(self.timeout)).await.map(drop)
    }

    /// One block's bytes. The node gives up after the timeout.
    pub async fn block_get(&self, cid: &Cid) -> Result<Vec<u8>, IpfsError> {
        let arg = cid.to_string();
        let resp = self
            .post("block/get", &[("arg", &arg), ("timeout", &self.timeout_arg())], None, Some(self.timeout))
            .await?;
        let body = resp.bytes().await.map_err(|e| IpfsError::Unreachable(format!("block/get: {e}")))?;
        Ok(body.to_vec())
    }

    /// Pins blocks without following their links (a repo block's links may point at blobs or at
    /// blocks of other revisions, which a recursive pin would try to fetch).
    pub async fn pin_direct(&self, cids: &[Cid]) -> Result<(), IpfsError> {
        if cids.is_empty() {
            return Ok(());
        }
        let args: Vec<String> = cids.iter().map(Cid::to_string).collect();
        let mut query: Vec<(&str, &str)> = args.iter().map(|a| ("arg", a.as_str())).collect();
        query.push(("recursive", "false"));
        let t = self.timeout_arg();
        query.push(("timeout", &t));
        self.post("pin/add", &query, None, Some(self.timeout)).await.map(drop)
    }

    /// Removes a pin; a CID that is not pinned is not an error.
    pub async fn unpin(&self, cid: &Cid, recursive: bool) -> Result<(), IpfsError> {
        let arg = cid.to_string();
        let recursive = if recursive { "true" } else { "false" };
        match self.post("pin/rm", &[("arg", &arg), ("recursive", recursive)], None, Some(self.timeout)).await {
            Ok(_) => Ok(()),
            Err(IpfsError::Node(m)) if m.contains("not pinned") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes direct pins, in one call; a CID that is not pinned is not an error (the call is
    /// then made again one CID at a time, since the node refuses the whole list).
    pub async fn unpin_many(&self, cids: &[Cid]) -> Result<(), IpfsError> {
        if cids.len() < 2 {
            return match cids.first() {
                Some(cid) => self.unpin(cid, false).await,
                None => Ok(()),
            };
        }
        let args: Vec<String> = cids.iter().map(Cid::to_string).collect();
        let mut query: Vec<(&str, &str)> = args.iter().map(|a| ("arg", a.as_str())).collect();
        query.push(("recursive", "false"));
        match self.post("pin/rm", &query, None, Some(self.timeout)).await {
            Ok(_) => Ok(()),
            Err(IpfsError::Node(m)) if m.contains("not pinned") => {
                for cid in cids {
                    self.unpin(cid, false).await?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Adds a file as UnixFS (CIDv1, raw leaves, pinned) and returns its root CID. The file is
    /// streamed, never read whole; `len` is its size.
    pub async fn add_file(&self, file: tokio::fs::File, len: u64) -> Result<Cid, IpfsError> {
        #[derive(Deserialize)]
        struct Added {
            #[serde(rename = "Hash")]
            hash: String,
        }
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024));
        let part = octet_stream(reqwest::multipart::Part::stream_with_length(body, len), "blob");
        let form = reqwest::multipart::Form::new().part("file", part);
        // Large files take longer than one block; allow a minute per 100 MB on top.
        let timeout = self.timeout + Duration::from_secs(60 * (len / 100_000_000 + 1));
        let resp = self
            .post(
                "add",
                &[("cid-version", "1"), ("raw-leaves", "true"), ("pin", "true"), ("progress", "false")],
                Some(form),
                Some(timeout),
            )
            .await?;
        let body = resp.bytes().await.map_err(|e| IpfsError::Unreachable(format!("add: {e}")))?;
        // One JSON object per line; the last one is the file.
        let last = body
            .split(|b| *b == b'\n')
            .rfind(|line| !line.is_empty())
            .ok_or_else(|| IpfsError::Protocol("add: empty answer".into()))?;
        let added: Added = serde_json::from_slice(last).map_err(|e| IpfsError::Protocol(format!("add: {e}")))?;
        Cid::try_from(added.hash.as_str()).map_err(|e| IpfsError::Protocol(format!("add hash: {e}")))
    }

    /// A UnixFS file's bytes as a stream.
    pub async fn cat(&self, cid: &Cid) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + use<>, IpfsError> {
        let arg = cid.to_string();
        let resp = self.post("cat", &[("arg", &arg), ("timeout", &self.timeout_arg())], None, None).await?;
        Ok(resp.bytes_stream().map(|r| r.map_err(std::io::Error::other)))
    }
}
