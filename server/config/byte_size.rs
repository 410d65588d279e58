//! Byte sizes as a number of bytes or a string with a binary or decimal
//! unit: `1048576`, `"1MiB"`, `"64 MB"`.

use serde::{Deserialize, Deserializer, Serializer, de::Error};

pub(super) fn serialize<S: Serializer>(value: &usize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(*value as u64)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Number(u64),
    Text(String),
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let bytes = match Raw::deserialize(d)? {
        Raw::Number(n) => n,
        Raw::Text(text) => parse(&text).map_err(D::Error::custom)?,
    };
    usize::try_from(bytes).map_err(|_| D::Error::custom("too large for this platform"))
}

pub(super) fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 1048576, \"64MiB\" or \"1GB\""))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}'; use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{text}' overflows"))
}
