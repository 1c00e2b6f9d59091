//! Thumbnails: JPEG, PNG, GIF (first frame) and WebP scaled or cropped, made once per size and
//! method, then served from the store. Decoding runs off the async threads, with limits, so
//! a hostile image costs a bounded amount of memory and gives a clear error.

use std::{io::Cursor, time::Duration};

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};

use super::{Services, StoredFile};
use crate::http::error::{Error, Result};

/// The boxes thumbnails are made for: a request gets the smallest that holds it (the
/// largest when none does), so each image has a handful of thumbnails, not one per size
/// anyone asks for.
const PRESETS: [(u32, u32); 6] = [
    (32, 32),
    (96, 96),
    (320, 240),
    (640, 480),
    (800, 600),
    (1600, 1200),
];
/// Largest source image side decoded.
const MAX_SOURCE_SIDE: u32 = 16_384;
/// Most pixels a source image may have (read from its header before decoding).
const MAX_SOURCE_PIXELS: u64 = 40_000_000;
/// Most memory a decode may allocate.
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// Thumbnails made at once; more requests wait their turn.
static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The preset box for a requested one.
fn preset(width: u32, height: u32) -> (u32, u32) {
    PRESETS
        .iter()
        .copied()
        .find(|(w, h)| *w >= width && *h >= height)
        .unwrap_or(PRESETS[PRESETS.len() - 1])
}

/// How a thumbnail fits the requested box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Exactly the box, cropping what overflows (no upscaling).
    Crop,
    /// Within the box, keeping the aspect ratio (no upscaling).
    Scale,
}

/// A requested thumbnail.
#[derive(Clone, Copy, Debug)]
pub struct ThumbnailSpec {
    /// Box width.
    pub width: u32,
    /// Box height.
    pub height: u32,
    /// Crop or scale.
    pub method: Method,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// The media type and size of a JPEG, PNG, GIF or WebP image (read from its header, not
/// from what anyone declared); `None` for anything else.
pub fn raster_image(bytes: &[u8]) -> Option<(&'static str, (u32, u32))> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let mime = match reader.format()? {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Png => "image/png",
        ImageFormat::Gif => "image/gif",
        ImageFormat::WebP => "image/webp",
        _ => return None,
    };
    Some((mime, reader.into_dimensions().ok()?))
}

/// Decodes the file and resizes it into the `(w, h)` box; `(encoded, content type)`.
fn render(
    path: &std::path::Path,
    (w, h): (u32, u32),
    method: Method,
) -> std::result::Result<(Vec<u8>, &'static str), String> {
    let open = || {
        ImageReader::open(path)
            .map_err(|e| e.to_string())?
            .with_guessed_format()
            .map_err(|e| e.to_string())
    };
    let mut reader = open()?;
    let format = reader.format().ok_or("not an image format we know")?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP
    ) {
        return Err(format!("{format:?} images are not thumbnailed"));
    }
    // The header says how large the image is before anything is decoded.
    let (sw, sh) = open()?.into_dimensions().map_err(|e| e.to_string())?;
    if u64::from(sw) * u64::from(sh) > MAX_SOURCE_PIXELS {
        return Err(format!("{sw}×{sh} is more than {MAX_SOURCE_PIXELS} pixels"));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| e.to_string())?;
    let (iw, ih) = (image.width().max(1), image.height().max(1));
    let resized: DynamicImage = match method {
        Method::Scale => {
            if iw <= w && ih <= h {
                image
            } else {
                image.resize(w, h, FilterType::Triangle)
            }
        }
        Method::Crop => {
            // Never upscale: a box larger than the image shrinks to fit, keeping its shape.
            let factor = f64::min(
                1.0,
                f64::min(f64::from(iw) / f64::from(w), f64::from(ih) / f64::from(h)),
            );
            let tw = ((f64::from(w) * factor).round() as u32).max(1);
            let th = ((f64::from(h) * factor).round() as u32).max(1);
            image.resize_to_fill(tw, th, FilterType::Triangle)
        }
    };
    let mut out = Cursor::new(Vec::new());
    if format == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(resized.to_rgb8())
            .write_to(&mut out, ImageFormat::Jpeg)
            .map_err(|e| e.to_string())?;
        Ok((out.into_inner(), "image/jpeg"))
    } else {
        resized
            .write_to(&mut out, ImageFormat::Png)
            .map_err(|e| e.to_string())?;
        Ok((out.into_inner(), "image/png"))
    }
}

impl Services {
    /// A thumbnail of a media item, made on the first request and stored.
    pub async fn media_thumbnail(
        &self,
        (server, media_id): (&str, &str),
        spec: ThumbnailSpec,
        wait: Duration,
    ) -> Result<StoredFile> {
        if spec.width == 0 || spec.height == 0 {
            return Err(Error::invalid_param("width and height must be at least 1"));
        }
        let (_, source) = self.media_file(server, media_id, wait).await?;
        // Another server's media is kept (and thumbnailed) under a key of its own.
        let key = if server == self.config.server_name.as_str() {
            media_id.to_owned()
        } else {
            super::remote::remote_key(server, media_id)
        };
        let media_id = key.as_str();
        let size = preset(spec.width, spec.height);
        let method = spec.method.as_str();
        if let Some((sha256, content_type)) = self.store.thumbnail(media_id, size, method).await? {
            let path = self.blob_file(&sha256);
            if let Ok(meta) = tokio::fs::metadata(&path).await {
                return Ok(StoredFile {
                    path,
                    content_type: Some(content_type),
                    filename: None,
                    size: meta.len(),
                });
            }
        }
        let _turn = RENDERING
            .acquire()
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("thumbnailer: {e}")))?;
        let path = source.path.clone();
        let chosen = spec.method;
        let rendered = tokio::task::spawn_blocking(move || render(&path, size, chosen))
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("thumbnailer: {e}")))?;
        let (encoded, content_type) = rendered.map_err(|why| {
            Error::bad_request(format!("This media cannot be thumbnailed: {why}"))
        })?;
        let len = encoded.len() as u64;
        let sha256 = self.store_bytes(encoded).await?;
        self.store
            .insert_thumbnail(media_id, size, method, (&sha256, content_type))
            .await?;
        Ok(StoredFile {
            path: self.blob_file(&sha256),
            content_type: Some(content_type.to_owned()),
            filename: None,
            size: len,
        })
    }
}
