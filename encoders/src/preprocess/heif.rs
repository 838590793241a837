//! HEIF / HEIC / AVIF decoding through the system's libheif, loaded at run time.
//!
//! jsearch builds and starts without libheif; the first HEIF file loads it (`libheif.so.1` on
//! Linux — Debian's `libheif1` with its HEVC and AV1 decoder plugins —, `libheif.1.dylib` on
//! macOS, `heif.dll`/`libheif.dll` on Windows). Without it, a HEIF file is skipped with a message
//! that names the file and the package to install. The API used exists since libheif 1.0 (Debian
//! 12 ships 1.15): the primary image of the file (multi-image HEIC: the one the phone shows),
//! decoded to interleaved 8-bit RGB with the file's rotation and mirroring applied (HEIF's own
//! `irot`/`imir`, which take the place of EXIF orientation).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use image::RgbImage;

/// `struct heif_error`, returned by value.
#[repr(C)]
struct HeifError {
    code: c_int,
    subcode: c_int,
    message: *const c_char,
}

type Alloc = unsafe extern "C" fn() -> *mut c_void;
type Free = unsafe extern "C" fn(*mut c_void);
type ReadMem = unsafe extern "C" fn(*mut c_void, *const c_void, usize, *const c_void) -> HeifError;
type Primary = unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> HeifError;
type HandleSize = unsafe extern "C" fn(*const c_void) -> c_int;
type Decode =
    unsafe extern "C" fn(*const c_void, *mut *mut c_void, c_int, c_int, *const c_void) -> HeifError;
type ImageSize = unsafe extern "C" fn(*const c_void, c_int) -> c_int;
type Plane = unsafe extern "C" fn(*const c_void, c_int, *mut c_int) -> *const u8;

/// `heif_colorspace_RGB`, `heif_chroma_interleaved_RGB`, `heif_channel_interleaved`.
const COLORSPACE_RGB: c_int = 1;
const CHROMA_INTERLEAVED_RGB: c_int = 10;
const CHANNEL_INTERLEAVED: c_int = 10;

struct Lib {
    _lib: libloading::Library,
    alloc: Alloc,
    free: Free,
    read: ReadMem,
    primary: Primary,
    handle_w: HandleSize,
    handle_h: HandleSize,
    handle_release: Free,
    decode: Decode,
    image_w: ImageSize,
    image_h: ImageSize,
    plane: Plane,
    image_release: Free,
}

const NAMES: &[&str] = &[
    "libheif.so.1",
    "libheif.so",
    "libheif.1.dylib",
    "libheif.dylib",
    "heif.dll",
    "libheif.dll",
];

fn lib() -> Result<&'static Lib, String> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    super::dynlib::load_once(&LIB, NAMES, bind, |last| {
        format!(
            "HEIF/HEIC/AVIF needs libheif, which is not installed ({last}); install it \
             (Debian/Ubuntu: apt install libheif1, macOS: brew install libheif)"
        )
    })
}

fn bind(l: libloading::Library) -> Result<Lib, libloading::Error> {
    // SAFETY: each symbol is declared with the signature libheif's heif.h gives it (stable
    // since libheif 1.0); the library stays loaded as long as the `Lib` holding the pointers.
    unsafe {
        Ok(Lib {
            alloc: *l.get::<Alloc>(b"heif_context_alloc\0")?,
            free: *l.get::<Free>(b"heif_context_free\0")?,
            read: *l.get::<ReadMem>(b"heif_context_read_from_memory_without_copy\0")?,
            primary: *l.get::<Primary>(b"heif_context_get_primary_image_handle\0")?,
            handle_w: *l.get::<HandleSize>(b"heif_image_handle_get_width\0")?,
            handle_h: *l.get::<HandleSize>(b"heif_image_handle_get_height\0")?,
            handle_release: *l.get::<Free>(b"heif_image_handle_release\0")?,
            decode: *l.get::<Decode>(b"heif_decode_image\0")?,
            image_w: *l.get::<ImageSize>(b"heif_image_get_width\0")?,
            image_h: *l.get::<ImageSize>(b"heif_image_get_height\0")?,
            plane: *l.get::<Plane>(b"heif_image_get_plane_readonly\0")?,
            image_release: *l.get::<Free>(b"heif_image_release\0")?,
            _lib: l,
        })
    }
}

/// Whether `bytes` start like an ISO-BMFF HEIF file (HEIC, HEIF, AVIF and their sequences).
pub fn is_heif(bytes: &[u8]) -> bool {
    if bytes.len() < 12 || &bytes[4..8] != b"ftyp" {
        return false;
    }
    matches!(
        &bytes[8..12],
        b"heic"
            | b"heix"
            | b"hevc"
            | b"hevx"
            | b"heim"
            | b"heis"
            | b"hevm"
            | b"hevs"
            | b"mif1"
            | b"msf1"
            | b"avif"
            | b"avis"
    )
}

fn check(e: HeifError, what: &str) -> Result<(), String> {
    if e.code == 0 {
        return Ok(());
    }
    let msg = if e.message.is_null() {
        String::new()
    } else {
        // SAFETY: libheif's messages are static NUL-terminated strings.
        unsafe { CStr::from_ptr(e.message) }
            .to_string_lossy()
            .trim()
            .to_string()
    };
    Err(format!(
        "{what}: {msg} (libheif error {}.{})",
        e.code, e.subcode
    ))
}

/// Frees what it holds when dropped.
struct Guard<'a>(&'a Lib, *mut c_void, fn(&Lib) -> Free);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.1.is_null() {
            // SAFETY: the pointer came from the matching libheif allocation and is freed once.
            unsafe { (self.2)(self.0)(self.1) }
        }
    }
}

/// The primary image's size as shown (after the file's rotation), from the header; `None` when
/// libheif is missing or the file does not parse.
pub fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let l = lib().ok()?;
    // SAFETY: as in `decode`: the context outlives the handle, `bytes` outlive the context.
    unsafe {
        let ctx = Guard(l, (l.alloc)(), |l| l.free);
        if ctx.1.is_null() {
            return None;
        }
        check(
            (l.read)(ctx.1, bytes.as_ptr().cast(), bytes.len(), std::ptr::null()),
            "",
        )
        .ok()?;
        let mut h = std::ptr::null_mut();
        check((l.primary)(ctx.1, &mut h), "").ok()?;
        let handle = Guard(l, h, |l| l.handle_release);
        let (w, hh) = ((l.handle_w)(handle.1), (l.handle_h)(handle.1));
        Some((u32::try_from(w).ok()?, u32::try_from(hh).ok()?))
    }
}

/// Decodes the primary image to RGB. `max_pixels` is checked on the header's size before any
/// pixel is decoded.
pub fn decode(bytes: &[u8], max_pixels: Option<u64>) -> Result<RgbImage, String> {
    let l = lib()?;
    // SAFETY: every call follows libheif's API contract: the context outlives the handle and
    // the image (guards drop in reverse order), `bytes` outlives the context that reads it
    // without copying, and the plane is read within its stride and height.
    unsafe {
        let ctx = Guard(l, (l.alloc)(), |l| l.free);
        if ctx.1.is_null() {
            return Err("libheif could not allocate a context".into());
        }
        check(
            (l.read)(ctx.1, bytes.as_ptr().cast(), bytes.len(), std::ptr::null()),
            "not a readable HEIF file",
        )?;
        let mut h = std::ptr::null_mut();
        check((l.primary)(ctx.1, &mut h), "no primary image")?;
        let handle = Guard(l, h, |l| l.handle_release);
        let (w, hh) = ((l.handle_w)(handle.1), (l.handle_h)(handle.1));
        if w <= 0 || hh <= 0 {
            return Err(format!("image has no pixels ({w}x{hh})"));
        }
        if let Some(max) = max_pixels {
            let n = w as u64 * hh as u64;
            if n > max {
                return Err(format!(
                    "image too large: {w}x{hh} = {:.1} megapixels (limit {:.1})",
                    n as f64 / 1e6,
                    max as f64 / 1e6
                ));
            }
        }
        let mut img = std::ptr::null_mut();
        check(
            (l.decode)(
                handle.1,
                &mut img,
                COLORSPACE_RGB,
                CHROMA_INTERLEAVED_RGB,
                std::ptr::null(),
            ),
            "cannot decode",
        )?;
        let img = Guard(l, img, |l| l.image_release);
        let (w, h) = (
            (l.image_w)(img.1, CHANNEL_INTERLEAVED),
            (l.image_h)(img.1, CHANNEL_INTERLEAVED),
        );
        let mut stride: c_int = 0;
        let plane = (l.plane)(img.1, CHANNEL_INTERLEAVED, &mut stride);
        if plane.is_null() || w <= 0 || h <= 0 || (stride as i64) < w as i64 * 3 {
            return Err("decoded image has no RGB plane".into());
        }
        let (w, h, stride) = (w as usize, h as usize, stride as usize);
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            let row = std::slice::from_raw_parts(plane.add(y * stride), w * 3);
            out.extend_from_slice(row);
        }
        RgbImage::from_raw(w as u32, h as u32, out).ok_or_else(|| "bad RGB plane".to_string())
    }
}
