//! The media type of a blob, from its first bytes. Clients often upload with a generic
//! `Content-Type` (`*/*`, `application/octet-stream`); the type a record's lexicon checks
//! (an image embed wants `image/*`) must come from what the bytes are.

/// How many leading bytes [`sniff`] looks at.
pub const SNIFF_BYTES: usize = 512;

/// The media type the leading bytes of a file announce, for the formats people post.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if head.starts_with(PNG) {
        return Some("image/png");
    }
    if head.starts_with(b"\xff\xd8\xff") {
        return Some("image/jpeg");
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Some("image/gif");
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    if head.starts_with(b"\x1a\x45\xdf\xa3") {
        // EBML: WebM names its doctype early in the header; anything else is Matroska.
        let header = &head[..head.len().min(64)];
        return Some(if header.windows(4).any(|w| w == b"webm") { "video/webm" } else { "video/x-matroska" });
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return Some(iso_media(head));
    }
    if head.len() >= 8 && matches!(&head[4..8], b"moov" | b"mdat" | b"wide" | b"free" | b"skip") {
        return Some("video/quicktime"); // QuickTime files that start without an ftyp box
    }
    None
}

/// ISO base media files (MP4, MOV, AVIF, HEIC) by their `ftyp` box's brands.
fn iso_media(head: &[u8]) -> &'static str {
    let declared = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let end = declared.clamp(12, head.len());
    let major = &head[8..12];
    // The major brand, then the compatible brands after the minor version.
    let brands = std::iter::once(major).chain(head.get(16..end).unwrap_or(&[]).chunks_exact(4));
    let mut fallback = "video/mp4";
    for brand in brands {
        match brand {
            b"avif" | b"avis" => return "image/avif",
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" => return "image/heic",
            b"mif1" | b"msf1" => fallback = "image/heif",
            b"qt  " if brand == major => return "video/quicktime",
            _ => {}
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::sniff;

    fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
        let size = 16 + 4 * compatible.len();
        let mut b = (size as u32).to_be_bytes().to_vec();
        b.extend_from_slice(b"ftyp");
        b.extend_from_slice(major);
        b.extend_from_slice(&[0, 0, 0, 0]);
        for c in compatible {
            b.extend_from_slice(*c);
        }
        b.extend_from_slice(b"\0\0\0\x08mdat");
        b
    }

    #[test]
    fn formats_people_post() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0\0\x10JFIF"), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0"), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\x24\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(&ftyp(b"avif", &[b"mif1", b"miaf"])), Some("image/avif"));
        assert_eq!(sniff(&ftyp(b"mif1", &[b"avif"])), Some("image/avif"));
        assert_eq!(sniff(&ftyp(b"heic", &[b"mif1"])), Some("image/heic"));
        assert_eq!(sniff(&ftyp(b"mif1", &[b"heic"])), Some("image/heic"));
        assert_eq!(sniff(&ftyp(b"mif1", &[b"miaf"])), Some("image/heif"));
        assert_eq!(sniff(&ftyp(b"isom", &[b"iso2", b"avc1", b"mp41"])), Some("video/mp4"));
        assert_eq!(sniff(&ftyp(b"qt  ", &[b"qt  "])), Some("video/quicktime"));
        assert_eq!(sniff(b"\0\0\0\x08wide\0\0\0\0mdat"), Some("video/quicktime"));
        assert_eq!(sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm"), Some("video/webm"));
        assert_eq!(sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x82\x88matroska"), Some("video/x-matroska"));
    }

    #[test]
    fn unknown_and_short_inputs() {
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(sniff(b"RIFF"), None);
        assert_eq!(sniff(b"\0\0\0\x20ftyp"), None); // too short for a brand
        // A box size larger than what was read, or nonsense, never reads past the input.
        let mut b = ftyp(b"mif1", &[b"heic"]);
        b[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(sniff(&b), Some("image/heic"));
        b[..4].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(sniff(&b), Some("image/heif"));
    }
}
