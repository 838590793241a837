//! Camera RAW files (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2, PEF, …): the largest embedded JPEG
//! preview, which cameras write at or near full size — what the camera showed, decoded in
//! milliseconds. A RAW without a usable preview is refused with a message naming the file (no
//! sensor-data demosaicing is built in).

use std::path::Path;

/// File extensions read as camera RAW (lower case).
pub const RAW_EXTENSIONS: &[&str] = &[
    "dng", "cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "raf", "orf", "rw2", "pef",
    "srw", "3fr", "erf", "kdc", "mrw", "x3f", "iiq", "rwl",
];

/// Whether `path` names a RAW file by its extension.
pub fn is_raw_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| RAW_EXTENSIONS.iter().any(|r| r.eq_ignore_ascii_case(e)))
}

/// The end (exclusive) of the JPEG starting at `start` (an SOI), walking its segments: `None`
/// when it is not a well-formed JPEG up to its EOI.
fn jpeg_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 2;
    loop {
        // Markers may be padded with extra 0xFF.
        while b.get(i) == Some(&0xFF) && b.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if b.get(i) != Some(&0xFF) {
            return None;
        }
        let m = *b.get(i + 1)?;
        match m {
            0xD9 => return Some(i + 2),
            0xD0..=0xD7 | 0x01 => i += 2,
            _ => {
                let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
                if len < 2 {
                    return None;
                }
                i += 2 + len;
                if m == 0xDA {
                    // Entropy-coded data: up to the next marker that is not a stuffed byte or
                    // a restart.
                    loop {
                        let p = i + b.get(i..)?.iter().position(|&x| x == 0xFF)?;
                        match *b.get(p + 1)? {
                            0x00 | 0xD0..=0xD7 | 0xFF => i = p + 1,
                            _ => {
                                i = p;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The EXIF orientation (1–8) in a TIFF-based RAW's first IFD, if it has one.
pub fn tiff_orientation(b: &[u8]) -> Option<u8> {
    let le = match b.get(0..4)? {
        [b'I', b'I', _, _] => true,
        [b'M', b'M', _, _] => false,
        _ => return None,
    };
    let u16_at = |i: usize| -> Option<u16> {
        let x = [*b.get(i)?, *b.get(i + 1)?];
        Some(if le {
            u16::from_le_bytes(x)
        } else {
            u16::from_be_bytes(x)
        })
    };
    let u32_at = |i: usize| -> Option<u32> {
        let x = [*b.get(i)?, *b.get(i + 1)?, *b.get(i + 2)?, *b.get(i + 3)?];
        Some(if le {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let n = usize::from(u16_at(ifd)?);
    (0..n.min(512))
        .map(|k| ifd + 2 + 12 * k)
        .find(|&e| u16_at(e) == Some(0x0112))
        .and_then(|e| u16_at(e + 8))
        .and_then(|o| u8::try_from(o).ok())
        .filter(|o| (1..=8).contains(o))
}

/// The largest embedded JPEG (by pixel count from its header) in a RAW file's bytes.
pub fn largest_preview(b: &[u8]) -> Option<&[u8]> {
    let mut best: Option<(u64, &[u8])> = None;
    let mut i = 0;
    while let Some(off) = b
        .get(i..)
        .and_then(|s| s.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF]))
    {
        let start = i + off;
        i = start + 2;
        let Some(end) = jpeg_end(b, start) else {
            continue;
        };
        let jpeg = &b[start..end];
        let dims =
            image::ImageReader::with_format(std::io::Cursor::new(jpeg), image::ImageFormat::Jpeg)
                .into_dimensions();
        if let Ok((w, h)) = dims {
            let px = u64::from(w) * u64::from(h);
            if best.is_none_or(|(p, _)| px > p) {
                best = Some((px, jpeg));
            }
        }
        i = end;
    }
    best.map(|(_, j)| j)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(w, h, image::Rgb([200, 30, 30]))
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn finds_the_largest_preview_among_noise() {
        let mut raw = b"II*\0 raw header".to_vec();
        raw.extend_from_slice(&jpeg(16, 12));
        raw.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0x00, 0x13, 0x37]); // a false SOI
        let big = jpeg(64, 48);
        raw.extend_from_slice(&big);
        raw.extend_from_slice(&[0xAB; 100]);
        assert_eq!(largest_preview(&raw), Some(&big[..]));
        assert_eq!(largest_preview(b"no jpeg here"), None);
        assert!(is_raw_path(Path::new("IMG_1.CR2")) && !is_raw_path(Path::new("a.jpg")));
    }
}
