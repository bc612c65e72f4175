//! CAR v1 (content-addressed archives): a streaming writer and a streaming reader that checks
//! every block against its CID and enforces limits. Malformed input is an error, never a panic.

use std::io::{self, Read, Write};

use ::cid::Cid;

/// Why a CAR could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("invalid CAR header: {0}")]
    Header(String),
    #[error("invalid CAR section: {0}")]
    Section(String),
    #[error("block {cid} does not match its CID")]
    HashMismatch { cid: Cid },
    #[error("CAR limit exceeded: {0}")]
    Limit(String),
}

/// Limits for reading untrusted CARs.
#[derive(Debug, Clone, Copy)]
pub struct CarLimits {
    /// Largest block accepted, in bytes.
    pub max_block_size: usize,
    /// Most blocks accepted.
    pub max_blocks: usize,
    /// Most bytes read in total (header included).
    pub max_total_bytes: u64,
}

impl Default for CarLimits {
    fn default() -> Self {
        Self { max_block_size: 2 * 1024 * 1024, max_blocks: 10_000_000, max_total_bytes: 10 * 1024 * 1024 * 1024 }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    version: u64,
    roots: Vec<Cid>,
}

fn write_varint(w: &mut impl Write, mut n: u64) -> io::Result<()> {
    let mut buf = [0u8; 10];
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf[i] = byte;
            i += 1;
            break;
        }
        buf[i] = byte | 0x80;
        i += 1;
    }
    w.write_all(&buf[..i])
}

/// Writes a CAR v1 stream block by block.
pub struct CarWriter<W: Write> {
    out: W,
    cid_buf: Vec<u8>,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header naming `roots` and returns a writer for the blocks.
    pub fn new(mut out: W, roots: &[Cid]) -> Result<Self, CarError> {
        let header = crate::data::encode_as(&Header { version: 1, roots: roots.to_vec() })
            .map_err(|e| CarError::Header(e.to_string()))?;
        write_varint(&mut out, header.len() as u64)?;
        out.write_all(&header)?;
        Ok(Self { out, cid_buf: Vec::with_capacity(64) })
    }

    /// Appends one block. The caller vouches that `bytes` hash to `cid`.
    pub fn write_block(&mut self, cid: &Cid, bytes: &[u8]) -> Result<(), CarError> {
        self.cid_buf.clear();
        cid.write_bytes(&mut self.cid_buf).map_err(|e| CarError::Section(e.to_string()))?;
        write_varint(&mut self.out, (self.cid_buf.len() + bytes.len()) as u64)?;
        self.out.write_all(&self.cid_buf)?;
        self.out.write_all(bytes)?;
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, CarError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl CarWriter<Vec<u8>> {
    /// Takes the bytes written so far, for streaming a CAR out in pieces.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// How many bytes are waiting to be taken.
    pub fn buffered(&self) -> usize {
        self.out.len()
    }
}

/// Encodes a whole CAR in memory.
pub fn encode<'a>(roots: &[Cid], blocks: impl IntoIterator<Item = (&'a Cid, &'a [u8])>) -> Vec<u8> {
    let mut w = CarWriter::new(Vec::new(), roots).expect("writing to a Vec cannot fail");
    for (cid, bytes) in blocks {
        w.write_block(cid, bytes).expect("writing to a Vec cannot fail");
    }
    w.finish().expect("writing to a Vec cannot fail")
}

/// Reads a CAR v1 stream, yielding verified blocks.
pub struct CarReader<R: Read> {
    input: R,
    roots: Vec<Cid>,
    limits: CarLimits,
    blocks_read: usize,
    bytes_read: u64,
    done: bool,
}

impl<R: Read> CarReader<R> {
    /// Reads and checks the header.
    pub fn new(input: R, limits: CarLimits) -> Result<Self, CarError> {
        let mut reader = Self { input, roots: Vec::new(), limits, blocks_read: 0, bytes_read: 0, done: false };
        let len = reader.read_varint()?.ok_or_else(|| CarError::Header("empty input".into()))?;
        if len == 0 || len > 64 * 1024 {
            return Err(CarError::Header(format!("header length {len} out of range")));
        }
        let bytes = reader.read_exact_vec(len as usize)?;
        let data_limits = crate::data::Limits { max_bytes: 64 * 1024, max_depth: 4 };
        let header: Header =
            crate::data::decode_as(&bytes, &data_limits).map_err(|e| CarError::Header(e.to_string()))?;
        if header.version != 1 {
            return Err(CarError::Header(format!("unsupported version {}", header.version)));
        }
        reader.roots = header.roots;
        Ok(reader)
    }

    /// The roots named in the header.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    fn count(&mut self, n: u64) -> Result<(), CarError> {
        self.bytes_read += n;
        if self.bytes_read > self.limits.max_total_bytes {
            return Err(CarError::Limit(format!("more than {} bytes", self.limits.max_total_bytes)));
        }
        Ok(())
    }

    /// Reads a LEB128 varint; `None` at a clean end of input.
    fn read_varint(&mut self) -> Result<Option<u64>, CarError> {
        let mut value = 0u64;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            let n = loop {
                match self.input.read(&mut byte) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if n == 0 {
                if i == 0 {
                    return Ok(None);
                }
                return Err(CarError::Section("truncated varint".into()));
            }
            self.count(1)?;
            value |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] & 0x80 == 0 {
                return Ok(Some(value));
            }
        }
        Err(CarError::Section("varint too long".into()))
    }

    fn read_exact_vec(&mut self, len: usize) -> Result<Vec<u8>, CarError> {
        self.count(len as u64)?;
        let mut buf = vec![0u8; len];
        self.input.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => CarError::Section("truncated section".into()),
            _ => CarError::Io(e),
        })?;
        Ok(buf)
    }

    /// The next verified block, or `None` at the end.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        if self.done {
            return Ok(None);
        }
        let Some(len) = self.read_varint()? else {
            self.done = true;
            return Ok(None);
        };
        // A section is a CID (36 bytes for sha2-256 CIDv1) followed by the block.
        if len > (self.limits.max_block_size as u64) + 128 {
            return Err(CarError::Limit(format!("section of {len} bytes over the block size limit")));
        }
        if self.blocks_read >= self.limits.max_blocks {
            return Err(CarError::Limit(format!("more than {} blocks", self.limits.max_blocks)));
        }
        let mut section = self.read_exact_vec(len as usize)?;
        let mut cursor = io::Cursor::new(&section[..]);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| CarError::Section(format!("bad CID: {e}")))?;
        let offset = cursor.position() as usize;
        if section.len() - offset > self.limits.max_block_size {
            return Err(CarError::Limit(format!("block over {} bytes", self.limits.max_block_size)));
        }
        if !crate::cid::matches(&cid, &section[offset..]) {
            return Err(CarError::HashMismatch { cid });
        }
        self.blocks_read += 1;
        section.drain(..offset);
        Ok(Some((cid, section)))
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<(Cid, Vec<u8>), CarError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_block() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
