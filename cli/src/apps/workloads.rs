//! The workloads of `lego bench apps`: one table entry each (program, input generator, argument
//! template, size), and the deterministic input generators.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// A generated input file.
#[derive(Clone, Copy, Debug)]
pub enum Input {
    /// Words drawn from a Zipf distribution (s = 1) over a fixed vocabulary, `size` bytes.
    ZipfText,
    /// An uncompressed 24-bit BMP image of about `size` bytes.
    Bitmap,
}

impl Input {
    /// The file name the program is given (in the directory that is its root under lego).
    pub fn file_name(self) -> &'static str {
        match self {
            Input::ZipfText => "input.txt",
            Input::Bitmap => "input.bmp",
        }
    }

    /// Writes the input of `size` bytes, from `seed`, to `path`.
    pub fn generate(self, path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
        let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = std::io::BufWriter::new(f);
        match self {
            Input::ZipfText => zipf_text(&mut w, size, seed)?,
            Input::Bitmap => bitmap(&mut w, size, seed)?,
        }
        w.flush().with_context(|| format!("writing {}", path.display()))
    }
}

/// One workload: `program` from the guest images, run as `program ARGS` where the template's
/// `{threads}`, `{n}` and `{input}` are replaced by the thread count, the size and the input
/// file's name.
pub struct Workload {
    /// Name in the results.
    pub name: &'static str,
    /// Program in the guest images directory.
    pub program: &'static str,
    /// Its input file, if it reads one (generated with size `n`).
    pub input: Option<Input>,
    /// Argument template.
    pub args: &'static [&'static str],
    /// Size `n` at scale 1 (units are the workload's: bytes, points, matrix order...).
    pub full_n: u64,
    /// How `n` grows with the scale: 1 for linear, 0.5 when the data grows as n squared.
    pub n_exponent: f64,
    /// Smallest useful `n`.
    pub min_n: u64,
    /// The data the program works on, in bytes, for size `n` (the measured peak RSS adds code,
    /// stack and allocator slack).
    pub data: fn(u64) -> u64,
}

/// Every workload, in the order of the results.
pub const WORKLOADS: &[Workload] = &[
    // Map-reduce word count with pthreads (Phoenix's word_count).
    Workload {
        name: "wordcount",
        program: "wordcount",
        input: Some(Input::ZipfText),
        args: &["{input}", "{threads}"],
        full_n: 32 << 20,
        n_exponent: 1.0,
        min_n: 64 << 10,
        data: |n| n,
    },
    Workload {
        name: "histogram",
        program: "histogram",
        input: Some(Input::Bitmap),
        args: &["{threads}", "{input}"],
        full_n: 32 << 20,
        n_exponent: 1.0,
        min_n: 64 << 10,
        data: |n| n,
    },
    Workload {
        name: "kmeans",
        program: "kmeans",
        input: None,
        args: &["{threads}", "{n}", "16", "4", "8", "1"],
        full_n: 1 << 20,
        n_exponent: 1.0,
        min_n: 4096,
        data: |n| n * (4 * 4 + 4),
    },
    Workload {
        name: "matmul",
        program: "matmul",
        input: None,
        args: &["{threads}", "{n}", "64", "1"],
        full_n: 768,
        n_exponent: 0.5,
        min_n: 64,
        data: |n| 3 * n * n * 8,
    },
    Workload {
        name: "psort",
        program: "psort",
        input: None,
        args: &["{threads}", "{n}", "1"],
        full_n: 2 << 20,
        n_exponent: 1.0,
        min_n: 4096,
        data: |n| 2 * 8 * n,
    },
    // The random-access read-modify-write checksum (single-threaded), in MiB: LegoOS's worst
    // case, every access a likely miss once the data does not fit.
    Workload {
        name: "checksum",
        program: "checksum",
        input: None,
        args: &["{n}", "7"],
        full_n: 2,
        n_exponent: 1.0,
        min_n: 1,
        data: |n| n << 20,
    },
];

impl Workload {
    /// The size at `scale`.
    pub fn n(&self, scale: f64) -> u64 {
        ((self.full_n as f64 * scale.powf(self.n_exponent)).round() as u64).max(self.min_n)
    }

    /// The program's arguments.
    pub fn argv(&self, n: u64, threads: usize) -> Vec<String> {
        let input = self.input.map_or("", Input::file_name);
        self.args
            .iter()
            .map(|a| a.replace("{threads}", &threads.to_string()).replace("{n}", &n.to_string()).replace("{input}", input))
            .collect()
    }
}

/// splitmix64: the generators' fixed-seed source.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Words in the Zipf vocabulary.
const VOCABULARY: usize = 50_000;

/// Text of exactly `size` bytes: words of 1-12 lower-case letters drawn with Zipf's law
/// (the word of rank r with probability proportional to 1/r), 12 words a line.
pub fn zipf_text(w: &mut impl Write, size: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = SplitMix(seed);
    let words: Vec<Vec<u8>> = (0..VOCABULARY)
        .map(|_| {
            let len = 1 + (rng.next() % 12) as usize;
            (0..len).map(|_| b'a' + (rng.next() % 26) as u8).collect()
        })
        .collect();
    // Cumulative weights of 1/r, sampled by binary search.
    let mut cdf = Vec::with_capacity(VOCABULARY);
    let mut total = 0.0;
    for r in 1..=VOCABULARY {
        total += 1.0 / r as f64;
        cdf.push(total);
    }
    let mut written = 0u64;
    let mut on_line = 0;
    let mut line = Vec::with_capacity(256);
    while written < size {
        let x = rng.unit() * total;
        let i = cdf.partition_point(|&c| c <= x).min(VOCABULARY - 1);
        line.extend_from_slice(&words[i]);
        on_line += 1;
        line.push(if on_line % 12 == 0 { b'\n' } else { b' ' });
        if on_line % 12 == 0 || written + line.len() as u64 >= size {
            let n = line.len().min((size - written) as usize);
            w.write_all(&line[..n])?;
            written += n as u64;
            line.clear();
        }
    }
    Ok(())
}

/// A 24-bit BMP of about `size` bytes (1024 pixels wide): smooth colour gradients with noise.
pub fn bitmap(w: &mut impl Write, size: u64, seed: u64) -> std::io::Result<()> {
    const WIDTH: u64 = 1024;
    let height = (size.saturating_sub(54) / (3 * WIDTH)).max(1);
    let pixels = 3 * WIDTH * height;
    let mut h = Vec::with_capacity(54);
    h.extend_from_slice(b"BM");
    h.extend_from_slice(&((54 + pixels) as u32).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&54u32.to_le_bytes());
    h.extend_from_slice(&40u32.to_le_bytes());
    h.extend_from_slice(&(WIDTH as u32).to_le_bytes());
    h.extend_from_slice(&(height as u32).to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&24u16.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&(pixels as u32).to_le_bytes());
    h.extend_from_slice(&[0u8; 16]);
    w.write_all(&h)?;
    let mut rng = SplitMix(seed);
    let mut row = vec![0u8; 3 * WIDTH as usize];
    for y in 0..height {
        for x in 0..WIDTH {
            let noise = rng.next();
            let i = 3 * x as usize;
            row[i] = ((x * 255 / WIDTH) as u8).wrapping_add((noise & 31) as u8);
            row[i + 1] = ((y * 255 / height) as u8).wrapping_add(((noise >> 8) & 31) as u8);
            row[i + 2] = (((x + y) & 255) as u8) ^ ((noise >> 16) & 15) as u8;
        }
        w.write_all(&row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_text_is_sized_seeded_and_skewed() {
        let mut a = Vec::new();
        zipf_text(&mut a, 200_000, 1).unwrap();
        let mut b = Vec::new();
        zipf_text(&mut b, 200_000, 1).unwrap();
        let mut c = Vec::new();
        zipf_text(&mut c, 200_000, 2).unwrap();
        assert_eq!(a.len(), 200_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Zipf: the most frequent word is about twice as frequent as the second.
        let mut counts = std::collections::HashMap::new();
        for w in a.split(|&b| b == b' ' || b == b'\n').filter(|w| !w.is_empty()) {
            *counts.entry(w).or_insert(0u64) += 1;
        }
        let mut v: Vec<u64> = counts.into_values().collect();
        v.sort_unstable_by(|x, y| y.cmp(x));
        let ratio = v[0] as f64 / v[1] as f64;
        assert!((1.5..2.8).contains(&ratio), "top two words {} and {}", v[0], v[1]);
    }

    #[test]
    fn bitmap_header() {
        let mut b = Vec::new();
        bitmap(&mut b, 1 << 20, 3).unwrap();
        assert_eq!(&b[..2], b"BM");
        assert_eq!(u32::from_le_bytes(b[2..6].try_into().unwrap()) as usize, b.len());
        assert!(b.len() <= 1 << 20 && b.len() > (1 << 20) - 3 * 1024 - 54);
    }

    #[test]
    fn argv_template() {
        let w = WORKLOADS.iter().find(|w| w.name == "histogram").unwrap();
        assert_eq!(w.argv(5, 2), ["2", "input.bmp"]);
        let k = WORKLOADS.iter().find(|w| w.name == "matmul").unwrap();
        assert_eq!(k.n(0.25), 384);
    }
}
