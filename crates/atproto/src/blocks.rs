//! Blocks by CID: the read interface the MST walks, and an in-memory map.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ::cid::Cid;

/// A failure of the underlying block storage (not a missing block).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("block storage: {0}")]
pub struct BlockSourceError(pub String);

/// Something blocks can be read from. Implemented by [`BlockMap`]; the server implements it
/// over its stores.
pub trait BlockSource {
    /// The bytes of a block, or `None` when this source does not have it.
    fn get_block(&self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, BlockSourceError>;
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn get_block(&self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, BlockSourceError> {
        (**self).get_block(cid)
    }
}

/// Reads from `first`, falling back to `second`: e.g. a commit's new blocks over the stored repo.
pub struct Overlay<A, B>(pub A, pub B);

impl<A: BlockSource, B: BlockSource> BlockSource for Overlay<A, B> {
    fn get_block(&self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, BlockSourceError> {
        match self.0.get_block(cid)? {
            Some(b) => Ok(Some(b)),
            None => self.1.get_block(cid),
        }
    }
}

/// An ordered in-memory map of blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockMap(BTreeMap<Cid, Vec<u8>>);

impl BlockMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a block under a CID the caller computed.
    pub fn insert(&mut self, cid: Cid, bytes: Vec<u8>) {
        self.0.insert(cid, bytes);
    }

    /// Adds DAG-CBOR bytes, computing their CID.
    pub fn insert_cbor(&mut self, bytes: Vec<u8>) -> Cid {
        let cid = crate::cid::cbor_cid(&bytes);
        self.0.insert(cid, bytes);
        cid
    }

    pub fn get(&self, cid: &Cid) -> Option<&[u8]> {
        self.0.get(cid).map(Vec::as_slice)
    }

    pub fn contains(&self, cid: &Cid) -> bool {
        self.0.contains_key(cid)
    }

    pub fn remove(&mut self, cid: &Cid) -> Option<Vec<u8>> {
        self.0.remove(cid)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn cids(&self) -> impl Iterator<Item = &Cid> {
        self.0.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Cid, &[u8])> {
        self.0.iter().map(|(c, b)| (c, b.as_slice()))
    }

    /// Moves every block of `other` into this map.
    pub fn extend(&mut self, other: BlockMap) {
        self.0.extend(other.0);
    }

    /// Total size of the block bytes.
    pub fn byte_size(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
}

impl FromIterator<(Cid, Vec<u8>)> for BlockMap {
    fn from_iter<I: IntoIterator<Item = (Cid, Vec<u8>)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl IntoIterator for BlockMap {
    type Item = (Cid, Vec<u8>);
    type IntoIter = std::collections::btree_map::IntoIter<Cid, Vec<u8>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl BlockSource for BlockMap {
    fn get_block(&self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, BlockSourceError> {
        Ok(self.0.get(cid).map(|b| Cow::Borrowed(b.as_slice())))
    }
}
