//! Photo attributes of an image file: when it was taken, with what, where.
//!
//! Read from the file's EXIF block (JPEG, TIFF-based RAW, HEIF/HEIC/AVIF, PNG, WebP) at ingest and
//! stored as the item's attributes, filterable with the `--where` grammar like a catalog's fields:
//!
//! | attribute | from | example |
//! |---|---|---|
//! | `taken` | `DateTimeOriginal` (else `DateTime`), as recorded (the camera's local time), ISO 8601; without EXIF the file's modification time in UTC | `"2024-06-01T14:30:00"` |
//! | `taken_from` | where `taken` came from | `"exif"` or `"file"` |
//! | `camera` | `Model` | `"iPhone 15"` |
//! | `make` | `Make` | `"Apple"` |
//! | `lens` | `LensModel` | `"iPhone 15 back camera 6.86mm f/1.6"` |
//! | `lat`, `lon` | `GPSLatitude`/`Ref`, `GPSLongitude`/`Ref`, decimal degrees (south and west negative) | `48.8584`, `2.2945` |
//!
//! A broken or missing EXIF block never makes an image unusable: it only lacks these attributes
//! (and `taken` falls back to the file's time).

use exif::{In, Reader, Tag, Value};

/// What the EXIF block says (each part absent when the file does not say it).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PhotoAttrs {
    pub(crate) taken: Option<String>,
    pub(crate) make: Option<String>,
    pub(crate) camera: Option<String>,
    pub(crate) lens: Option<String>,
    pub(crate) lat: Option<f64>,
    pub(crate) lon: Option<f64>,
    /// EXIF orientation 5–8: the picture is shown turned a quarter (width and height swap).
    pub(crate) quarter_turn: bool,
}

impl PhotoAttrs {
    /// Reads the attributes from an image file's bytes.
    pub(crate) fn read(bytes: &[u8]) -> PhotoAttrs {
        let Ok(exif) = Reader::new().read_from_container(&mut std::io::Cursor::new(bytes)) else {
            return PhotoAttrs::default();
        };
        let text = |tag: Tag| -> Option<String> {
            let f = exif.get_field(tag, In::PRIMARY)?;
            match &f.value {
                Value::Ascii(parts) => {
                    let s: String = parts
                        .iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ");
                    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
                    (!s.is_empty()).then(|| s.to_string())
                }
                _ => None,
            }
        };
        let coord = |tag: Tag, reference: Tag, negative: &str| -> Option<f64> {
            let f = exif.get_field(tag, In::PRIMARY)?;
            let Value::Rational(r) = &f.value else {
                return None;
            };
            let part = |i: usize| r.get(i).filter(|x| x.denom != 0).map(|x| x.to_f64());
            let deg = part(0)? + part(1).unwrap_or(0.0) / 60.0 + part(2).unwrap_or(0.0) / 3600.0;
            let sign = match text(reference) {
                Some(s) if s.eq_ignore_ascii_case(negative) => -1.0,
                _ => 1.0,
            };
            let v = sign * deg;
            v.is_finite().then_some(v)
        };
        let orientation = exif
            .get_field(Tag::Orientation, In::PRIMARY)
            .and_then(|f| f.value.get_uint(0));
        PhotoAttrs {
            taken: text(Tag::DateTimeOriginal)
                .or_else(|| text(Tag::DateTime))
                .and_then(|t| iso_datetime(&t)),
            make: text(Tag::Make),
            camera: text(Tag::Model),
            lens: text(Tag::LensModel),
            lat: coord(Tag::GPSLatitude, Tag::GPSLatitudeRef, "S").filter(|v| v.abs() <= 90.0),
            lon: coord(Tag::GPSLongitude, Tag::GPSLongitudeRef, "W").filter(|v| v.abs() <= 180.0),
            quarter_turn: matches!(orientation, Some(5..=8)),
        }
    }

    /// The attributes as an item's metadata; `taken` from `mtime_secs` (UTC) when EXIF has none.
    pub(crate) fn insert_into(
        self,
        m: &mut serde_json::Map<String, serde_json::Value>,
        mtime_secs: Option<i64>,
    ) {
        match (self.taken, mtime_secs) {
            (Some(t), _) => {
                m.insert("taken".into(), t.into());
                m.insert("taken_from".into(), "exif".into());
            }
            (None, Some(s)) => {
                m.insert("taken".into(), iso_from_unix(s).into());
                m.insert("taken_from".into(), "file".into());
            }
            (None, None) => {}
        }
        for (k, v) in [
            ("make", self.make),
            ("camera", self.camera),
            ("lens", self.lens),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.into());
            }
        }
        if let (Some(lat), Some(lon)) = (self.lat, self.lon) {
            m.insert("lat".into(), lat.into());
            m.insert("lon".into(), lon.into());
        }
    }
}

/// EXIF's `YYYY:MM:DD HH:MM:SS` as `YYYY-MM-DDTHH:MM:SS`; `None` for a blank or malformed date
/// (cameras write `0000:00:00 00:00:00` or spaces when the clock was not set).
fn iso_datetime(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ok = digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && digits(11..13)
        && digits(14..16)
        && digits(17..19);
    if !ok || &s[0..4] == "0000" || &s[5..7] == "00" || &s[8..10] == "00" {
        return None;
    }
    Some(format!(
        "{}-{}-{}T{}:{}:{}",
        &s[0..4],
        &s[5..7],
        &s[8..10],
        &s[11..13],
        &s[14..16],
        &s[17..19]
    ))
}

/// Seconds since 1970 (UTC) as `YYYY-MM-DDTHH:MM:SS`.
pub fn iso_from_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A `--after`/`--before` date as the filter compares it: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or
/// with a time `YYYY-MM-DDTHH:MM[:SS]` (a space for the `T` is fine).
pub fn parse_date(s: &str) -> Result<String, String> {
    let t = s.trim().replacen(' ', "T", 1);
    let shape: String = t
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    let ok = matches!(
        shape.as_str(),
        "9999" | "9999-99" | "9999-99-99" | "9999-99-99T99:99" | "9999-99-99T99:99:99"
    );
    let month_ok = t.get(5..7).is_none_or(|m| ("01"..="12").contains(&m));
    let day_ok = t.get(8..10).is_none_or(|d| ("01"..="31").contains(&d));
    if ok && month_ok && day_ok {
        Ok(t)
    } else {
        Err(format!(
            "{s:?} is not a date: use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            iso_datetime("2024:06:01 14:30:05").as_deref(),
            Some("2024-06-01T14:30:05")
        );
        assert_eq!(iso_datetime("0000:00:00 00:00:00"), None);
        assert_eq!(iso_datetime("    :  :     :  :  "), None);
        assert_eq!(iso_from_unix(0), "1970-01-01T00:00:00");
        assert_eq!(iso_from_unix(1_717_252_205), "2024-06-01T14:30:05");
        assert_eq!(iso_from_unix(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(parse_date("2024-06").unwrap(), "2024-06");
        assert_eq!(parse_date("2024-06-01 10:00").unwrap(), "2024-06-01T10:00");
        assert!(parse_date("2024-13-01").is_err());
        assert!(parse_date("last summer").is_err());
    }

    #[test]
    fn no_exif_no_attributes() {
        assert_eq!(PhotoAttrs::read(b"not an image"), PhotoAttrs::default());
        let mut m = serde_json::Map::new();
        PhotoAttrs::default().insert_into(&mut m, Some(0));
        assert_eq!(m["taken"], "1970-01-01T00:00:00");
        assert_eq!(m["taken_from"], "file");
    }
}
