//! What a signer checks before it signs, from the bytes alone: a signer is the only holder of
//! the user's key, and the server that sends it requests may be hostile (an operator with the
//! database and the server's keys can serve the signer socket itself). Labels the server adds
//! (`ops`) are never trusted; the payload is decoded and recognised as exactly one of three
//! kinds, each checked for this account:
//!
//! - an unsigned repo commit, with the evidence a relay would need (the previous signed
//!   commit, the changed keys with their old and new CIDs, the covering proof blocks): it must
//!   invert, through exactly those changes, to the previous commit's tree, which the signer's
//!   own key (or the DID's history) vouches for, at a newer revision;
//! - a PLC operation, compared with the DID's current state as the PLC directory (not the
//!   server) reports it, and judged by what it changes;
//! - a service-auth JWT issued by this DID, short-lived.
//!
//! Anything else is refused with a [`Refusal`] that says why.

use std::collections::BTreeMap;

use atproto::Cid;
use atproto::blocks::BlockMap;
use atproto::commit::{SignedCommit, UnsignedCommit};
use atproto::crypto::PublicKey;
use atproto::syntax::Tid;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::protocol::CommitEvidence;

/// Why a signer refused, in words for its log or dialog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

/// A PLC operation's fields that matter to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlcState {
    pub tombstone: bool,
    pub rotation_keys: Vec<String>,
    pub atproto_key: Option<String>,
    pub pds: Option<String>,
    pub handles: Vec<String>,
    /// For an operation: the CID of the operation it follows.
    pub prev: Option<String>,
}

impl PlcState {
    /// Reads an operation's fields from its JSON form (as the PLC directory serves it).
    pub fn from_json(op: &Value) -> Result<Self, Refusal> {
        let strings = |v: &Value| -> Result<Vec<String>, Refusal> {
            match v {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| Refusal("a list holds a non-string".into())))
                    .collect(),
                _ => refuse("a list field is not a list"),
            }
        };
        let kind = op["type"].as_str().unwrap_or("");
        let prev = op["prev"].as_str().map(str::to_owned);
        match kind {
            "plc_tombstone" => Ok(Self { tombstone: true, prev, ..Self::default() }),
            "plc_operation" => Ok(Self {
                tombstone: false,
                rotation_keys: strings(&op["rotationKeys"])?,
                atproto_key: op["verificationMethods"]["atproto"].as_str().map(str::to_owned),
                pds: op["services"]["atproto_pds"]["endpoint"].as_str().map(str::to_owned),
                handles: strings(&op["alsoKnownAs"])?,
                prev,
            }),
            other => refuse(format!("unknown PLC operation type {other:?}")),
        }
    }
}

/// A service-auth token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAuth {
    pub aud: String,
    pub exp: i64,
    pub lxm: Option<String>,
}

/// What a sign request's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Commit(UnsignedCommit),
    Plc(PlcState),
    ServiceAuth(ServiceAuth),
}

/// Recognises the payload, for the account `own_did`; refuses anything else, and anything
/// for another account.
pub fn classify(own_did: &str, payload: &[u8]) -> Result<Payload, Refusal> {
    if let Ok(commit) = UnsignedCommit::from_bytes_to_sign(payload) {
        if commit.did.as_str() != own_did {
            return refuse(format!("a commit for another account ({})", commit.did));
        }
        return Ok(Payload::Commit(commit));
    }
    if let Ok(value) = atproto::data::decode(payload) {
        let json = atproto::data::to_json(&value);
        let kind = json["type"].as_str().unwrap_or("");
        if matches!(kind, "plc_operation" | "plc_tombstone") {
            if json.get("sig").is_some() {
                return refuse("a PLC operation that is already signed");
            }
            // Re-encoding must give the same bytes: nothing hidden in the encoding.
            if atproto::data::encode(&value).ok().as_deref() != Some(payload) {
                return refuse("a PLC operation that is not canonically encoded");
            }
            return Ok(Payload::Plc(PlcState::from_json(&json)?));
        }
        return refuse(format!("a DAG-CBOR object that is neither a commit nor a PLC operation (type {kind:?})"));
    }
    if let Some(auth) = service_auth(own_did, payload)? {
        return Ok(Payload::ServiceAuth(auth));
    }
    refuse("a payload that is not a commit, a PLC operation or a service-auth token")
}

/// A JWT signing input (`header.claims`, base64url JSON) for ES256K, if that is what this is.
fn service_auth(own_did: &str, payload: &[u8]) -> Result<Option<ServiceAuth>, Refusal> {
    let Ok(text) = std::str::from_utf8(payload) else { return Ok(None) };
    let Some((header, claims)) = text.split_once('.') else { return Ok(None) };
    let part = |p: &str| URL_SAFE_NO_PAD.decode(p).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(header), Some(claims)) = (part(header), part(claims)) else { return Ok(None) };
    if header["alg"] != "ES256K" {
        return refuse(format!("a token for algorithm {}, not ES256K", header["alg"]));
    }
    let iss = claims["iss"].as_str().unwrap_or("");
    if iss.split('#').next() != Some(own_did) {
        return refuse(format!("a token issued as {iss:?}, not as {own_did}"));
    }
    let (Some(aud), Some(exp)) = (claims["aud"].as_str(), claims["exp"].as_i64()) else {
        return refuse("a token without aud or exp");
    };
    Ok(Some(ServiceAuth { aud: aud.to_owned(), exp, lxm: claims["lxm"].as_str().map(str::to_owned) }))
}

/// The longest a service-auth token may live.
pub const MAX_TOKEN_SECS: i64 = 7 * 24 * 60 * 60;

/// Methods whose tokens can move or remove the account: a signer asks before signing them.
pub fn token_moves_account(auth: &ServiceAuth) -> bool {
    match auth.lxm.as_deref() {
        None => true, // valid for any method
        Some(lxm) => {
            lxm.starts_with("com.atproto.identity.")
                || lxm.starts_with("com.atproto.admin.")
                || matches!(
                    lxm,
                    "com.atproto.server.createAccount"
                        | "com.atproto.server.deleteAccount"
                        | "com.atproto.server.deactivateAccount"
                        | "com.atproto.repo.importRepo"
                )
        }
    }
}

/// Checks a token's lifetime against `now` (seconds since the epoch).
pub fn check_token(auth: &ServiceAuth, now: i64) -> Result<(), Refusal> {
    if auth.exp <= now {
        return refuse("a token that has already expired");
    }
    if auth.exp - now > MAX_TOKEN_SECS {
        return refuse(format!("a token valid for {} s (at most {MAX_TOKEN_SECS})", auth.exp - now));
    }
    Ok(())
}

/// The root of an empty tree: the data of a new account's first commit.
pub fn empty_tree_root() -> Cid {
    atproto::mst::Mst::new().root_cid()
}

/// What the signer knows when it checks a commit.
pub struct CommitContext<'a> {
    pub own_key: &'a PublicKey,
    /// Earlier `#atproto` keys of the DID (from the PLC directory's log), whose commits the
    /// account's history holds.
    pub earlier_keys: &'a [PublicKey],
    /// The newest revision this signer has signed.
    pub last_rev: Option<&'a Tid>,
    /// The commits this signer signed lately.
    pub signed: &'a SignedHere,
}

/// The commits a signer signed lately, by the CID of their signed block. A previous commit
/// whose block hashes to one of them is one this signer made, signature and all, so it needs
/// no signature check: on a busy account that check was a third of the signer's work per
/// commit (each commit's previous one is almost always the last one signed).
#[derive(Debug, Default)]
pub struct SignedHere {
    recent: std::collections::VecDeque<Cid>,
}

impl SignedHere {
    /// How many it remembers: a few, since a server builds on the newest commit.
    const KEEP: usize = 16;

    /// Remembers a commit signed with `sig`.
    pub fn remember(&mut self, commit: UnsignedCommit, sig: Vec<u8>) {
        let (cid, _) = commit.with_signature(sig).to_block_with_cid();
        if self.recent.len() == Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(cid);
    }

    fn holds(&self, cid: &Cid) -> bool {
        self.recent.contains(cid)
    }
}

/// Whether this signer vouches for the previous commit (block `cid`) by itself: it signed
/// that very block lately, or the block carries its key's signature.
pub fn own_key_vouches(prev: &SignedCommit, cid: &Cid, own_key: &PublicKey, signed: &SignedHere) -> bool {
    signed.holds(cid) || prev.verify(own_key).is_ok()
}

/// One change a commit makes, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedChange {
    pub action: &'static str,
    pub path: String,
    /// The new record, decoded (creates and updates).
    pub record: Option<Value>,
}

impl CheckedChange {
    /// A line for a person: the action, the path and what the record says.
    pub fn describe(&self) -> String {
        let mut line = format!("{} {}", self.action, self.path);
        if let Some(record) = &self.record {
            let gist = record["text"]
                .as_str()
                .map(|t| format!("{t:?}"))
                .or_else(|| record["subject"]["uri"].as_str().map(str::to_owned))
                .or_else(|| record["subject"].as_str().map(str::to_owned))
                .or_else(|| record["displayName"].as_str().map(|t| format!("{t:?}")));
            if let Some(gist) = gist {
                line.push_str(": ");
                line.push_str(&gist.chars().take(120).collect::<String>());
            }
        }
        line
    }
}

/// Why the previous commit is one to build on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vouched {
    /// Signed by this signer's key.
    OwnKey,
    /// Signed by a key the DID had before.
    EarlierKey,
    /// An empty tree: a new account's first commit, signed by the server.
    Empty,
}

/// What [`check_commit`] needs from the evidence before it can decide: the previous commit and
/// the CID of its block (whether its signature needs the DID's earlier keys).
pub fn previous_commit(evidence: &CommitEvidence) -> Result<(SignedCommit, Cid), Refusal> {
    let bytes =
        URL_SAFE_NO_PAD.decode(&evidence.prev_commit).or_else(|_| refuse("previous commit is not base64url"))?;
    let prev =
        SignedCommit::from_block(&bytes).map_err(|e| Refusal(format!("previous commit does not decode: {e}")))?;
    Ok((prev, atproto::cid::cbor_cid(&bytes)))
}

/// Checks a commit against its evidence: it is this account's, newer than anything before
/// it, and changes exactly the listed keys of a tree the account's history vouches for.
/// Returns the changes, with their records, for display.
pub fn check_commit(
    commit: &UnsignedCommit,
    evidence: Option<&CommitEvidence>,
    ctx: &CommitContext<'_>,
) -> Result<(Vec<CheckedChange>, Vouched), Refusal> {
    let Some(evidence) = evidence else { return refuse("a commit without the evidence of what it changes") };
    let (prev, prev_cid) = previous_commit(evidence)?;
    if prev.unsigned.did != commit.did {
        return refuse("the previous commit is another account's");
    }
    let vouched = if own_key_vouches(&prev, &prev_cid, ctx.own_key, ctx.signed) {
        Vouched::OwnKey
    } else if ctx.earlier_keys.iter().any(|k| prev.verify(k).is_ok()) {
        Vouched::EarlierKey
    } else if prev.unsigned.data == empty_tree_root() {
        Vouched::Empty
    } else {
        return refuse("the previous commit is not signed by this account's key, now or before");
    };
    if commit.rev <= prev.unsigned.rev {
        return refuse(format!("revision {} is not newer than the previous {}", commit.rev, prev.unsigned.rev));
    }
    if let Some(last) = ctx.last_rev
        && commit.rev <= *last
    {
        return refuse(format!("revision {} is not newer than {last}, already signed", commit.rev));
    }

    let blocks = read_blocks(&evidence.blocks)?;
    let mut changes = Vec::with_capacity(evidence.ops.len());
    let mut keys = Vec::with_capacity(evidence.ops.len());
    for op in &evidence.ops {
        let cid = parse_cid(op.cid.as_deref())?;
        let prev_cid = parse_cid(op.prev.as_deref())?;
        let action = match (op.action.as_str(), cid, prev_cid) {
            ("create", Some(_), None) => "create",
            ("update", Some(_), Some(_)) => "update",
            ("delete", None, Some(_)) => "delete",
            (action, ..) => return refuse(format!("an op {action:?} on {} with CIDs that do not fit it", op.path)),
        };
        let (collection, rkey) = op.path.split_once('/').ok_or_else(|| Refusal(format!("bad path {}", op.path)))?;
        atproto::syntax::Nsid::new(collection).map_err(|e| Refusal(format!("bad collection in {}: {e}", op.path)))?;
        atproto::syntax::RecordKey::new(rkey).map_err(|e| Refusal(format!("bad record key in {}: {e}", op.path)))?;
        let record = match cid {
            Some(cid) => {
                let bytes = blocks.get(&cid).ok_or_else(|| Refusal(format!("the record of {} is missing", op.path)))?;
                let value = atproto::data::decode(bytes)
                    .map_err(|e| Refusal(format!("the record of {} is bad: {e}", op.path)))?;
                let json = atproto::data::to_json(&value);
                if json["$type"] != collection {
                    return refuse(format!("the record at {} is a {}", op.path, json["$type"]));
                }
                Some(json)
            }
            None => None,
        };
        keys.push(atproto::mst::KeyChange { key: op.path.clone(), cid, prev: prev_cid });
        changes.push(CheckedChange { action, path: op.path.clone(), record });
    }
    let before = atproto::mst::invert(&blocks, commit.data, &keys)
        .map_err(|e| Refusal(format!("the new tree does not match the listed changes: {e}")))?;
    if before != prev.unsigned.data {
        return refuse("the new tree changes more than the listed changes");
    }
    Ok((changes, vouched))
}

fn parse_cid(cid: Option<&str>) -> Result<Option<Cid>, Refusal> {
    cid.map(|c| c.parse().map_err(|e| Refusal(format!("bad CID {c}: {e}")))).transpose()
}

/// The evidence's blocks: a CAR, every block hash-checked.
fn read_blocks(car: &str) -> Result<BlockMap, Refusal> {
    let bytes = URL_SAFE_NO_PAD.decode(car).or_else(|_| refuse("evidence blocks are not base64url"))?;
    let limits = atproto::car::CarLimits { max_total_bytes: 8 * 1024 * 1024, ..atproto::car::CarLimits::default() };
    let mut reader = atproto::car::CarReader::new(bytes.as_slice(), limits)
        .map_err(|e| Refusal(format!("evidence blocks are not a CAR: {e}")))?;
    let mut blocks = BlockMap::new();
    while let Some((cid, bytes)) = reader.next_block().map_err(|e| Refusal(format!("evidence block: {e}")))? {
        blocks.insert(cid, bytes);
    }
    Ok(blocks)
}

/// How a PLC operation changes the DID, judged for the signer whose key is `own_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlcChange {
    /// Before → after, one line per field that changes.
    pub lines: Vec<String>,
    /// Changes who controls the DID or where it lives: the `#atproto` key, the PDS, the
    /// rotation keys' order or members where they touch this key, or a tombstone.
    pub identity: bool,
    /// Leaves this key out of the rotation keys (or tombstones the DID): after it, this key
    /// can no longer undo anything.
    pub removes_own_key: bool,
}

/// Compares an operation with the DID's current state (from the PLC directory, whose last
/// operation has CID `current_cid`).
pub fn plc_change(current: &PlcState, current_cid: &str, op: &PlcState, own_key: &str) -> Result<PlcChange, Refusal> {
    if op.prev.as_deref() != Some(current_cid) {
        return refuse(format!(
            "a PLC operation that does not follow this DID's current state ({current_cid}); it follows {:?}",
            op.prev
        ));
    }
    let mut lines = Vec::new();
    if op.tombstone {
        lines.push("the DID is tombstoned: deleted for good".to_owned());
        return Ok(PlcChange { lines, identity: true, removes_own_key: true });
    }
    let show = |v: &[String]| if v.is_empty() { "(none)".to_owned() } else { v.join(", ") };
    let one = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    if current.rotation_keys != op.rotation_keys {
        lines.push(format!("rotation keys: {} → {}", show(&current.rotation_keys), show(&op.rotation_keys)));
    }
    if current.atproto_key != op.atproto_key {
        lines.push(format!("signing key: {} → {}", one(&current.atproto_key), one(&op.atproto_key)));
    }
    if current.pds != op.pds {
        lines.push(format!("PDS: {} → {}", one(&current.pds), one(&op.pds)));
    }
    if current.handles != op.handles {
        lines.push(format!("handle: {} → {}", show(&current.handles), show(&op.handles)));
    }
    let position = |keys: &[String]| keys.iter().position(|k| k == own_key);
    let (was, now) = (position(&current.rotation_keys), position(&op.rotation_keys));
    let removes_own_key = was.is_some() && now.is_none();
    let demoted = matches!((was, now), (Some(w), Some(n)) if n > w);
    // Keys added above this one could undo its operations within the recovery window.
    let outranked = match (was, now) {
        (Some(_), Some(n)) => op.rotation_keys[..n].iter().any(|k| !current.rotation_keys.contains(k)),
        _ => false,
    };
    // Moving to another PDS moves the account: it is asked for like a change of control.
    let identity =
        current.atproto_key != op.atproto_key || current.pds != op.pds || removes_own_key || demoted || outranked;
    Ok(PlcChange { lines, identity, removes_own_key })
}

/// The DID's current state and its earlier `#atproto` keys, from the PLC directory's audit
/// log (`/<did>/log/audit`): entries of `{cid, operation, nullified}` in order.
pub fn plc_history(audit: &Value) -> Result<(PlcState, String, Vec<String>), Refusal> {
    let entries = audit.as_array().ok_or_else(|| Refusal("the PLC audit log is not a list".into()))?;
    let live: Vec<&Value> = entries.iter().filter(|e| e["nullified"] != true).collect();
    let last = live.last().ok_or_else(|| Refusal("the PLC directory has no operations for this DID".into()))?;
    let cid = last["cid"].as_str().ok_or_else(|| Refusal("the PLC audit log has no CIDs".into()))?.to_owned();
    let state = PlcState::from_json(&last["operation"])?;
    let mut keys: BTreeMap<String, ()> = BTreeMap::new();
    for e in &live {
        if let Some(k) = e["operation"]["verificationMethods"]["atproto"].as_str() {
            keys.insert(k.to_owned(), ());
        }
        if let Some(k) = e["operation"]["signingKey"].as_str() {
            keys.insert(k.to_owned(), ());
        }
    }
    Ok((state, cid, keys.into_keys().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rotation: &[&str], atproto: &str, handle: &str) -> PlcState {
        PlcState {
            tombstone: false,
            rotation_keys: rotation.iter().map(|s| s.to_string()).collect(),
            atproto_key: Some(atproto.into()),
            pds: Some("https://pds.test".into()),
            handles: vec![handle.into()],
            prev: None,
        }
    }

    /// A previous commit this signer signed lately is recognised by its block's hash, so its
    /// signature is not checked again; any other block still needs a signature that verifies.
    #[test]
    fn a_previous_commit_signed_here_is_known_by_its_hash() {
        use atproto::blocks::Overlay;
        let did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
        let record = |text: &str| {
            let value = serde_json::json!({ "$type": "app.bsky.feed.post", "text": text,
                "createdAt": "2026-12-01T10:00:00.000Z" });
            let bytes = atproto::data::encode(&atproto::data::record_from_json(&value).unwrap()).unwrap();
            (atproto::cid::cbor_cid(&bytes), bytes)
        };
        let mut store = BlockMap::new();
        let (first, bytes) = record("first");
        store.insert(first, bytes);
        let mut tree =
            atproto::mst::Mst::from_entries(vec![("app.bsky.feed.post/3kaaaaaaaaaa2".into(), first)]).unwrap();
        let before = tree.commit();
        store.extend(before.blocks);
        let prev = UnsignedCommit::new(
            atproto::syntax::Did::new(did).unwrap(),
            before.root,
            Tid::new("3kaaaaaaaaab2").unwrap(),
        );
        // Not a signature at all: only the memory of having signed this block can vouch for it.
        let sig = vec![7u8; 64];
        let prev_block = prev.clone().with_signature(sig.clone()).to_block();

        let mut tree = atproto::mst::Mst::load(&store, before.root).unwrap();
        let (second, bytes) = record("second");
        let path = "app.bsky.feed.post/3kaaaaaaaaac2".to_string();
        tree.insert(&store, &path, second).unwrap();
        let after = tree.commit();
        let mut new_blocks = after.blocks;
        new_blocks.insert(second, bytes);
        let proof =
            atproto::mst::commit_event_blocks(&Overlay(&new_blocks, &store), &new_blocks, after.root, [path.as_str()])
                .unwrap();
        let evidence = CommitEvidence {
            prev_commit: URL_SAFE_NO_PAD.encode(&prev_block),
            blocks: URL_SAFE_NO_PAD.encode(atproto::car::encode(&[after.root], proof.iter())),
            ops: vec![super::super::protocol::EvidenceOp {
                action: "create".into(),
                path,
                cid: Some(second.to_string()),
                prev: None,
            }],
        };
        let commit = UnsignedCommit::new(
            atproto::syntax::Did::new(did).unwrap(),
            after.root,
            Tid::new("3kaaaaaaaaad2").unwrap(),
        );
        let own = atproto::crypto::Keypair::generate(atproto::crypto::Algorithm::K256).public_key();
        let mut signed = SignedHere::default();
        let check = |signed: &SignedHere| {
            let ctx = CommitContext { own_key: &own, earlier_keys: &[], last_rev: None, signed };
            check_commit(&commit, Some(&evidence), &ctx)
        };
        let refused = check(&signed).unwrap_err();
        assert!(refused.0.contains("not signed by this account's key"), "{refused}");
        // Another commit remembered does not vouch for this one.
        let mut other = prev.clone();
        other.rev = Tid::new("3kaaaaaaaaaa3").unwrap();
        signed.remember(other, sig.clone());
        assert!(check(&signed).unwrap_err().0.contains("not signed by this account's key"));
        signed.remember(prev, sig);
        let (changes, vouched) = check(&signed).expect("vouched for by memory");
        assert_eq!((changes.len(), vouched), (1, Vouched::OwnKey));
    }

    #[test]
    fn plc_changes_are_judged_by_what_they_do() {
        let now = state(&["did:key:me"], "did:key:me", "at://a.test");
        let next = |mut s: PlcState| {
            s.prev = Some("bafyprev".into());
            s
        };
        let handle =
            plc_change(&now, "bafyprev", &next(state(&["did:key:me"], "did:key:me", "at://b.test")), "did:key:me")
                .unwrap();
        assert!(!handle.identity && !handle.removes_own_key);
        assert_eq!(handle.lines, vec!["handle: at://a.test → at://b.test"]);

        let takeover =
            plc_change(&now, "bafyprev", &next(state(&["did:key:evil"], "did:key:evil", "at://a.test")), "did:key:me")
                .unwrap();
        assert!(takeover.identity && takeover.removes_own_key);

        let outranked = plc_change(
            &now,
            "bafyprev",
            &next(state(&["did:key:evil", "did:key:me"], "did:key:me", "at://a.test")),
            "did:key:me",
        )
        .unwrap();
        assert!(outranked.identity && !outranked.removes_own_key);

        let recovery_below = plc_change(
            &now,
            "bafyprev",
            &next(state(&["did:key:me", "did:key:backup"], "did:key:me", "at://a.test")),
            "did:key:me",
        )
        .unwrap();
        assert!(!recovery_below.identity);

        let moved = plc_change(
            &now,
            "bafyprev",
            &next(PlcState {
                pds: Some("https://elsewhere.test".into()),
                ..state(&["did:key:me"], "did:key:me", "at://a.test")
            }),
            "did:key:me",
        )
        .unwrap();
        assert!(moved.identity && !moved.removes_own_key, "a move to another PDS is asked for");

        let stale =
            plc_change(&now, "bafyother", &next(state(&["did:key:me"], "did:key:me", "at://b.test")), "did:key:me");
        assert!(stale.is_err());

        let tomb = PlcState { tombstone: true, prev: Some("bafyprev".into()), ..PlcState::default() };
        let tomb = plc_change(&now, "bafyprev", &tomb, "did:key:me").unwrap();
        assert!(tomb.identity && tomb.removes_own_key);
    }

    #[test]
    fn tokens_are_bounded_and_the_dangerous_ones_named() {
        let auth = |lxm: Option<&str>, exp| ServiceAuth { aud: "did:web:x".into(), exp, lxm: lxm.map(str::to_owned) };
        assert!(check_token(&auth(Some("app.bsky.feed.getTimeline"), 1060), 1000).is_ok());
        assert!(check_token(&auth(Some("app.bsky.feed.getTimeline"), 999), 1000).is_err());
        assert!(check_token(&auth(Some("app.bsky.feed.getTimeline"), 1000 + MAX_TOKEN_SECS + 1), 1000).is_err());
        assert!(!token_moves_account(&auth(Some("app.bsky.feed.getTimeline"), 0)));
        assert!(token_moves_account(&auth(None, 0)));
        assert!(token_moves_account(&auth(Some("com.atproto.server.createAccount"), 0)));
        assert!(token_moves_account(&auth(Some("com.atproto.identity.submitPlcOperation"), 0)));
    }

    #[test]
    fn payloads_are_classified_by_content() {
        let did = "did:plc:abcdefghijklmnopqrstuvwx";
        let commit = UnsignedCommit::new(
            atproto::syntax::Did::new(did).unwrap(),
            empty_tree_root(),
            Tid::new("3kbbbbbbbbbbb").unwrap(),
        );
        assert!(matches!(classify(did, &commit.bytes_to_sign()), Ok(Payload::Commit(_))));
        assert!(classify("did:plc:someoneelseentirely", &commit.bytes_to_sign()).is_err());
        // A signed commit, or one with something appended, is not a commit to sign.
        let mut extended = commit.bytes_to_sign();
        extended.push(0);
        assert!(classify(did, &extended).is_err());
        let signed = commit.clone().with_signature(vec![0; 64]).to_block();
        assert!(classify(did, &signed).is_err());

        let op = serde_json::json!({ "type": "plc_operation", "rotationKeys": ["did:key:me"],
            "verificationMethods": { "atproto": "did:key:me" }, "alsoKnownAs": ["at://a.test"],
            "services": { "atproto_pds": { "type": "AtprotoPersonalDataServer", "endpoint": "https://pds.test" } },
            "prev": "bafyprev" });
        let bytes = atproto::data::encode(&atproto::data::from_json(&op).unwrap()).unwrap();
        assert!(matches!(classify(did, &bytes), Ok(Payload::Plc(s)) if s.atproto_key.as_deref() == Some("did:key:me")));
        let mut signed_op = op.clone();
        signed_op["sig"] = serde_json::json!("abc");
        let bytes = atproto::data::encode(&atproto::data::from_json(&signed_op).unwrap()).unwrap();
        assert!(classify(did, &bytes).is_err());

        let jwt = |claims: Value| {
            let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256K"}"#);
            format!("{h}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()))
        };
        let ok = jwt(
            serde_json::json!({ "iss": did, "aud": "did:web:api.bsky.app", "exp": 10, "lxm": "app.bsky.feed.getTimeline" }),
        );
        assert!(matches!(classify(did, ok.as_bytes()), Ok(Payload::ServiceAuth(_))));
        let other = jwt(serde_json::json!({ "iss": "did:plc:other", "aud": "did:web:x", "exp": 10 }));
        assert!(classify(did, other.as_bytes()).is_err());

        for garbage in [&b""[..], b"\xa1", b"hello", b"a.b", &[0xa1, 0x61, 0x61, 0x01]] {
            assert!(classify(did, garbage).is_err(), "{garbage:?}");
        }
    }
}
