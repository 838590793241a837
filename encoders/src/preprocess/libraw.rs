//! Camera RAW sensor data decoded through the system's LibRaw, loaded at run time: the fallback
//! for RAW files without an embedded full-size JPEG preview (old cameras, some DNG writers,
//! scanned negatives). Files with a preview never come here (`raw::largest_preview` is faster
//! and is what the camera showed).
//!
//! jsearch builds and starts without LibRaw (LGPL-2.1 / CDDL, so it is opened at run time, not
//! linked in); the first preview-less RAW loads it (`libraw_r.so.*` on Linux — Debian 12's
//! `libraw20` —, `libraw_r.dylib` on macOS, `libraw.dll` on Windows). Without it such a file is
//! skipped with a message naming the file and the package. The C API used exists since LibRaw
//! 0.14: open from memory, unpack, process (linear demosaic, camera white balance, sRGB, 8 bits),
//! a memory image with the file's orientation applied.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use image::RgbImage;

type Init = unsafe extern "C" fn(u32) -> *mut c_void;
type OpenBuffer = unsafe extern "C" fn(*mut c_void, *const c_void, usize) -> c_int;
type Step = unsafe extern "C" fn(*mut c_void) -> c_int;
type Size = unsafe extern "C" fn(*mut c_void) -> c_int;
type MakeImage = unsafe extern "C" fn(*mut c_void, *mut c_int) -> *mut ProcessedImage;
type ClearImage = unsafe extern "C" fn(*mut ProcessedImage);
type Close = unsafe extern "C" fn(*mut c_void);
type StrError = unsafe extern "C" fn(c_int) -> *const c_char;
type SetInt = unsafe extern "C" fn(*mut c_void, c_int);
type DataErrorCallback = unsafe extern "C" fn(*mut c_void, *const c_char, c_int);
type SetDataErrorHandler = unsafe extern "C" fn(*mut c_void, DataErrorCallback, *mut c_void);

/// LibRaw's default data-error handler prints to stderr ("unknown file: Unexpected end of
/// file"); the error comes back as a return code and is reported with the file's name instead.
unsafe extern "C" fn quiet(_data: *mut c_void, _file: *const c_char, _offset: c_int) {}

/// `libraw_processed_image_t`: a header, then `data_size` bytes of interleaved pixels.
#[repr(C)]
struct ProcessedImage {
    kind: c_int,
    height: u16,
    width: u16,
    colors: u16,
    bits: u16,
    data_size: u32,
    data: [u8; 1],
}

/// `LIBRAW_IMAGE_BITMAP`.
const IMAGE_BITMAP: c_int = 2;

struct Lib {
    _lib: libloading::Library,
    init: Init,
    open: OpenBuffer,
    raw_width: Size,
    raw_height: Size,
    unpack: Step,
    process: Step,
    make_image: MakeImage,
    clear_image: ClearImage,
    close: Close,
    strerror: StrError,
    set_output_bps: SetInt,
    set_demosaic: SetInt,
    set_output_color: SetInt,
    set_dataerror_handler: SetDataErrorHandler,
}

/// The thread-safe build first (`libraw_r`: the index decodes on every core at once).
const NAMES: &[&str] = &[
    "libraw_r.so.23",
    "libraw_r.so.20",
    "libraw_r.so.19",
    "libraw_r.so",
    "libraw_r.dylib",
    "libraw_r.23.dylib",
    "libraw.dll",
];

fn lib() -> Result<&'static Lib, String> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    super::dynlib::load_once(&LIB, NAMES, bind, |last| {
        format!(
            "a RAW without an embedded preview needs LibRaw, which is not installed ({last}); \
             install it (Debian/Ubuntu: apt install libraw20 or libraw23, macOS: brew install \
             libraw) or index the camera's JPEG instead"
        )
    })
}

fn bind(l: libloading::Library) -> Result<Lib, libloading::Error> {
    // SAFETY: each symbol is declared with the signature libraw.h gives it (stable since LibRaw
    // 0.14); the library stays loaded as long as the `Lib` holding the pointers.
    unsafe {
        Ok(Lib {
            init: *l.get::<Init>(b"libraw_init\0")?,
            open: *l.get::<OpenBuffer>(b"libraw_open_buffer\0")?,
            raw_width: *l.get::<Size>(b"libraw_get_raw_width\0")?,
            raw_height: *l.get::<Size>(b"libraw_get_raw_height\0")?,
            unpack: *l.get::<Step>(b"libraw_unpack\0")?,
            process: *l.get::<Step>(b"libraw_dcraw_process\0")?,
            make_image: *l.get::<MakeImage>(b"libraw_dcraw_make_mem_image\0")?,
            clear_image: *l.get::<ClearImage>(b"libraw_dcraw_clear_mem\0")?,
            close: *l.get::<Close>(b"libraw_close\0")?,
            strerror: *l.get::<StrError>(b"libraw_strerror\0")?,
            set_output_bps: *l.get::<SetInt>(b"libraw_set_output_bps\0")?,
            set_demosaic: *l.get::<SetInt>(b"libraw_set_demosaic\0")?,
            set_output_color: *l.get::<SetInt>(b"libraw_set_output_color\0")?,
            set_dataerror_handler: *l
                .get::<SetDataErrorHandler>(b"libraw_set_dataerror_handler\0")?,
            _lib: l,
        })
    }
}

/// LibRaw's sentence for an error code.
fn message(l: &Lib, code: c_int) -> String {
    // SAFETY: libraw_strerror returns a static NUL-terminated string for any code.
    let p = unsafe { (l.strerror)(code) };
    if p.is_null() {
        format!("LibRaw error {code}")
    } else {
        // SAFETY: non-null, static, NUL-terminated (above).
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy();
        format!("{} (LibRaw error {code})", s.trim())
    }
}

/// Closes the LibRaw handle when dropped.
struct Handle<'a>(&'a Lib, *mut c_void);

impl Drop for Handle<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from libraw_init and is closed once.
        unsafe { (self.0.close)(self.1) }
    }
}

/// Frees the processed image when dropped.
struct Image<'a>(&'a Lib, *mut ProcessedImage);

impl Drop for Image<'_> {
    fn drop(&mut self) {
        // SAFETY: the image came from libraw_dcraw_make_mem_image and is freed once.
        unsafe { (self.0.clear_image)(self.1) }
    }
}

/// Decodes a RAW file's sensor data to 8-bit sRGB, oriented as the camera recorded. The sensor's
/// size is checked against `max_pixels` before anything is unpacked.
pub fn decode(bytes: &[u8], max_pixels: Option<u64>) -> Result<RgbImage, String> {
    let l = lib()?;
    // SAFETY: LibRaw's API contract: the handle outlives the processed image (dropped first),
    // `bytes` outlives the handle that reads it, and the image's data is read within the
    // `data_size` LibRaw reports for it.
    unsafe {
        let h = (l.init)(0);
        if h.is_null() {
            return Err("LibRaw could not allocate a decoder".into());
        }
        let h = Handle(l, h);
        (l.set_dataerror_handler)(h.1, quiet, std::ptr::null_mut());
        let rc = (l.open)(h.1, bytes.as_ptr().cast(), bytes.len());
        if rc != 0 {
            return Err(format!("not a RAW file LibRaw reads: {}", message(l, rc)));
        }
        let (w, ht) = ((l.raw_width)(h.1), (l.raw_height)(h.1));
        let pixels = u64::try_from(w).unwrap_or(0) * u64::try_from(ht).unwrap_or(0);
        if pixels == 0 {
            return Err("RAW sensor size is 0".into());
        }
        if let Some(max) = max_pixels {
            if pixels > max {
                return Err(format!(
                    "RAW sensor is {w}x{ht} ({:.1} megapixels), over the limit of {:.1}",
                    pixels as f64 / 1e6,
                    max as f64 / 1e6
                ));
            }
        }
        (l.set_output_bps)(h.1, 8);
        (l.set_output_color)(h.1, 1); // sRGB
        (l.set_demosaic)(h.1, 0); // linear: the model sees ≤ 512 px of it
        let rc = (l.unpack)(h.1);
        if rc != 0 {
            return Err(format!("cannot unpack the sensor data: {}", message(l, rc)));
        }
        let rc = (l.process)(h.1);
        if rc != 0 {
            return Err(format!(
                "cannot process the sensor data: {}",
                message(l, rc)
            ));
        }
        let mut err = 0;
        let img = (l.make_image)(h.1, &mut err);
        if img.is_null() {
            return Err(format!("cannot make an image: {}", message(l, err)));
        }
        let img = Image(l, img);
        let p = &*img.1;
        if p.kind != IMAGE_BITMAP || p.colors != 3 || p.bits != 8 {
            return Err(format!(
                "LibRaw made an image of type {} with {} colours of {} bits (expected an 8-bit RGB bitmap)",
                p.kind, p.colors, p.bits
            ));
        }
        let (ow, oh) = (u32::from(p.width), u32::from(p.height));
        let n = ow as usize * oh as usize * 3;
        if (p.data_size as usize) < n {
            return Err(format!(
                "LibRaw's image is {} bytes for {ow}x{oh} RGB",
                p.data_size
            ));
        }
        let data = std::slice::from_raw_parts(std::ptr::addr_of!(p.data).cast::<u8>(), n).to_vec();
        RgbImage::from_raw(ow, oh, data).ok_or_else(|| "LibRaw's image has no pixels".to_string())
    }
}

/// Whether LibRaw can be loaded here (for tests and `--help`-style diagnostics).
pub fn available() -> bool {
    lib().is_ok()
}
