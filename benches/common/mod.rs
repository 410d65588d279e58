//! What the benchmark binaries share: random tensor data of any protocol
//! datatype, and medians.

#![allow(
    dead_code,
    reason = "each bench binary uses a different part of this module"
)]

use oxserve_proto::{BytesWriter, DataType};

/// A small, fast, seedable generator (xorshift64*): benchmark inputs need
/// to be varied, not cryptographic, and this keeps `rand` out of the tree.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Raw wire encoding (little-endian; BYTES as 4-byte length prefixes) of
/// `elements` random values of the protocol datatype `datatype`, or `None`
/// for a datatype the protocol does not define.
///
/// Integers are drawn from `0..=255`, which every integer type holds and
/// which keeps token-id inputs (such as magika's byte values) in range;
/// floats from `[0, 1)`; BYTES are 8 to 24 lowercase letters and spaces.
pub(crate) fn random_raw(datatype: &str, elements: usize, rng: &mut Rng) -> Option<Vec<u8>> {
    let datatype = DataType::parse(datatype)?;
    let size = datatype.element_size().unwrap_or(0);
    let mut out = Vec::with_capacity(elements * size.max(20));
    for _ in 0..elements {
        match datatype {
            DataType::Bool => out.push((rng.next_u64() & 1) as u8),
            DataType::Fp32 => out.extend_from_slice(&(rng.next_f64() as f32).to_le_bytes()),
            DataType::Fp64 => out.extend_from_slice(&rng.next_f64().to_le_bytes()),
            DataType::Fp16 => {
                out.extend_from_slice(&half::f16::from_f64(rng.next_f64()).to_bits().to_le_bytes())
            }
            DataType::Bf16 => {
                out.extend_from_slice(&half::bf16::from_f64(rng.next_f64()).to_bits().to_le_bytes())
            }
            DataType::Bytes => {
                let len = 8 + rng.below(17) as usize;
                let text: Vec<u8> = (0..len)
                    .map(|_| match rng.below(27) as u8 {
                        26 => b' ',
                        c => b'a' + c,
                    })
                    .collect();
                let element = BytesWriter::encode(&[text]).expect("a short element");
                out.extend_from_slice(&element);
            }
            DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64 => {
                // Integers: the value's low byte, then zeros (little-endian).
                out.push(rng.below(256) as u8);
                out.extend(std::iter::repeat_n(0u8, size - 1));
            }
        }
    }
    Some(out)
}

/// Raw wire encoding of `elements` copies of `value` as the protocol
/// datatype `datatype` (integers truncated toward zero), or `None` for
/// BYTES or a datatype the protocol does not define. For inputs that must
/// hold particular values: an attention mask of ones, token type ids of 0.
pub(crate) fn constant_raw(datatype: &str, elements: usize, value: f64) -> Option<Vec<u8>> {
    let datatype = DataType::parse(datatype)?;
    let one: Vec<u8> = match datatype {
        DataType::Bool => vec![u8::from(value != 0.0)],
        DataType::Fp32 => (value as f32).to_le_bytes().to_vec(),
        DataType::Fp64 => value.to_le_bytes().to_vec(),
        DataType::Fp16 => half::f16::from_f64(value).to_bits().to_le_bytes().to_vec(),
        DataType::Bf16 => half::bf16::from_f64(value).to_bits().to_le_bytes().to_vec(),
        DataType::Bytes => return None,
        DataType::Uint8
        | DataType::Uint16
        | DataType::Uint32
        | DataType::Uint64
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64 => {
            let size = datatype.element_size()?;
            (value as i64).to_le_bytes()[..size].to_vec()
        }
    };
    Some(one.repeat(elements))
}

/// The median of `values` (the mean of the middle two for an even count);
/// `NaN` when empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// This process's (or `pid`'s) resident set size in KiB, from
/// `/proc/<pid>/status` (Linux only; `None` elsewhere or if it is gone).
pub(crate) fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
