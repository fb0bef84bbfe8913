//! Decoding a copy of a compressed response for the scanner, as frames pass.
//!
//! The client receives the upstream's bytes untouched (the SDKs asked for the encoding and
//! decode it themselves); the scanner needs the plain JSON or event stream, so each frame is
//! also pushed through an incremental decoder whose output goes straight to the scanner,
//! never held. Decoders: `flate2` (gzip, and `deflate`, zlib-wrapped or raw), pure-Rust
//! `brotli-decompressor` (br) and `ruzstd` (zstd), all push-fed. A decompression bomb is cut:
//! a frame may decode to at most [`MAX_DECODED_PER_FRAME`], a response to
//! [`MAX_DECODED_BYTES`]; past either, or on a corrupt stream, the scanner gives up (usage
//! unknown) while the client still gets every byte.

use std::io::{self, Write};

use brotli_decompressor::DecompressorWriter;
use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use http::HeaderMap;
use http::header::CONTENT_ENCODING;
use ruzstd::decoding::FrameDecoder;

use super::Scanner;

/// The most one upstream frame may decode to (a frame is at most a few tens of KiB on the
/// wire; JSON compresses ~10x, highly repetitive JSON far more).
pub const MAX_DECODED_PER_FRAME: usize = 4 * 1024 * 1024;

/// The most a whole response may decode to before metering gives up on it.
pub const MAX_DECODED_BYTES: u64 = 64 * 1024 * 1024;

/// The most compressed input held for zstd, which decodes whole blocks only: the largest block
/// (128 KiB) plus its header and a frame header, with room for one frame's overhang.
const MAX_ZSTD_INPUT: usize = 2 * (128 * 1024 + 3 + 18);

/// How the upstream encoded the body, as far as metering can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Encoding {
    /// The body's `Content-Encoding`; `None` for an encoding (or a chain of several) that
    /// metering does not decode.
    pub fn of(headers: &HeaderMap) -> Option<Encoding> {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(value) = values.next() else { return Some(Encoding::Identity) };
        if values.next().is_some() {
            return None;
        }
        let value = value.as_bytes().trim_ascii();
        let is = |name: &str| value.eq_ignore_ascii_case(name.as_bytes());
        Some(if value.is_empty() || is("identity") {
            Encoding::Identity
        } else if is("gzip") || is("x-gzip") {
            Encoding::Gzip
        } else if is("deflate") {
            Encoding::Deflate
        } else if is("br") {
            Encoding::Brotli
        } else if is("zstd") {
            Encoding::Zstd
        } else {
            return None;
        })
    }
}

/// Where decoded bytes go: the scanner, within the budgets.
#[derive(Debug)]
pub struct Sink {
    scanner: Option<Scanner>,
    frame: usize,
    total: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.frame += buf.len();
        self.total += buf.len() as u64;
        if self.frame > MAX_DECODED_PER_FRAME || self.total > MAX_DECODED_BYTES {
            return Err(io::Error::other("decoded size over the metering budget"));
        }
        if let Some(scanner) = &mut self.scanner {
            scanner.feed(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A decoder writing into a [`Sink`].
pub enum Decoder {
    Gzip(MultiGzDecoder<Sink>),
    /// `deflate` before its first byte says whether it is zlib-wrapped (RFC 9110) or raw (what
    /// some servers send).
    Deflate(Option<Sink>),
    Zlib(ZlibDecoder<Sink>),
    RawDeflate(DeflateDecoder<Sink>),
    Brotli(Box<DecompressorWriter<Sink>>),
    Zstd(Box<Zstd>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decoder::Gzip(_) => "Gzip",
            Decoder::Deflate(_) => "Deflate",
            Decoder::Zlib(_) => "Zlib",
            Decoder::RawDeflate(_) => "RawDeflate",
            Decoder::Brotli(_) => "Brotli",
            Decoder::Zstd(_) => "Zstd",
        })
    }
}

/// ruzstd's push interface decodes whole blocks from a slice: the input waits here until a
/// block is complete.
pub struct Zstd {
    decoder: FrameDecoder,
    input: Vec<u8>,
    output: Box<[u8]>,
    sink: Sink,
    /// The frame header has been handed to the decoder.
    started: bool,
}

impl std::fmt::Debug for Zstd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zstd").field("input", &self.input.len()).field("started", &self.started).finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder feeding `scanner`; `Err` gives the scanner back for identity, where it reads
    /// the frames themselves.
    pub fn new(encoding: Encoding, scanner: Scanner) -> Result<Decoder, Scanner> {
        if encoding == Encoding::Identity {
            return Err(scanner);
        }
        let sink = Sink { scanner: Some(scanner), frame: 0, total: 0 };
        Ok(match encoding {
            Encoding::Identity | Encoding::Gzip => Decoder::Gzip(MultiGzDecoder::new(sink)),
            Encoding::Deflate => Decoder::Deflate(Some(sink)),
            Encoding::Brotli => Decoder::Brotli(Box::new(DecompressorWriter::new(sink, 4096))),
            Encoding::Zstd => Decoder::Zstd(Box::new(Zstd {
                decoder: FrameDecoder::new(),
                input: Vec::new(),
                output: vec![0; 32 * 1024].into_boxed_slice(),
                sink,
                started: false,
            })),
        })
    }

    /// Decodes one frame into the scanner; `Err` once the stream is corrupt or over budget.
    pub fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        self.sink().frame = 0;
        match self {
            Decoder::Gzip(d) => d.write_all(data),
            Decoder::Deflate(sink) => {
                let Some(&first) = data.first() else { return Ok(()) };
                let sink = sink.take().ok_or_else(|| io::Error::other("deflate decoder lost"))?;
                // A zlib stream starts with CMF: method 8 (deflate) in the low nibble.
                *self = if first & 0x0f == 8 {
                    Decoder::Zlib(ZlibDecoder::new(sink))
                } else {
                    Decoder::RawDeflate(DeflateDecoder::new(sink))
                };
                self.feed(data)
            }
            Decoder::Zlib(d) => d.write_all(data),
            Decoder::RawDeflate(d) => d.write_all(data),
            Decoder::Brotli(d) => d.write_all(data),
            Decoder::Zstd(z) => z.feed(data, false),
        }
    }

    /// The body ended: flushes what the decoder still holds and returns the scanner (`None`
    /// if decoding failed at the end: a truncated or corrupt stream).
    pub fn finish(mut self) -> Option<Scanner> {
        let flushed = match &mut self {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Deflate(_) => Ok(()),
            Decoder::Zlib(d) => d.try_finish(),
            Decoder::RawDeflate(d) => d.try_finish(),
            Decoder::Brotli(d) => d.flush(),
            Decoder::Zstd(z) => z.feed(&[], true),
        };
        let scanner = self.sink().scanner.take();
        // A stream cut mid-way still yields what was decoded: the scanner judges what it read.
        let _ = flushed;
        scanner
    }

    fn sink(&mut self) -> &mut Sink {
        match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Deflate(sink) => sink.get_or_insert_with(|| Sink { scanner: None, frame: 0, total: 0 }),
            Decoder::Zlib(d) => d.get_mut(),
            Decoder::RawDeflate(d) => d.get_mut(),
            Decoder::Brotli(d) => d.get_mut(),
            Decoder::Zstd(z) => &mut z.sink,
        }
    }
}

impl Zstd {
    fn feed(&mut self, mut data: &[u8], end: bool) -> io::Result<()> {
        loop {
            let room = MAX_ZSTD_INPUT - self.input.len();
            if room == 0 {
                return Err(io::Error::other("zstd block larger than the format allows"));
            }
            let (now, later) = data.split_at(data.len().min(room));
            self.input.extend_from_slice(now);
            data = later;
            self.decode(end && data.is_empty())?;
            if data.is_empty() {
                return Ok(());
            }
        }
    }

    fn decode(&mut self, end: bool) -> io::Result<()> {
        // The frame header is read in one go from the slice: wait until it is surely whole
        // (18 bytes at most), unless the body is over.
        if !self.started {
            if self.input.len() < 18 && !end {
                return Ok(());
            }
            self.started = true;
        }
        loop {
            let (read, written) =
                self.decoder.decode_from_to(&self.input, &mut self.output).map_err(io::Error::other)?;
            // ruzstd reports the 4 checksum bytes as read even before they arrived: wait.
            if read > self.input.len() {
                return Ok(());
            }
            self.input.drain(..read);
            self.sink.write_all(self.output.get(..written).unwrap_or_default())?;
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                // Bytes after the frame (another frame, or padding) are not read.
                self.input.clear();
                return Ok(());
            }
            if read == 0 && written == 0 {
                return Ok(());
            }
        }
    }
}
