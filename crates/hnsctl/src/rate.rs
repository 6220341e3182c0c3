//! `--max-bandwidth RATE`: a rate as people write it (`10mbit`, `500kbit`, `2MB`, `125000`),
//! turned into the bytes per second of the `QOS` policy's `MaximumOutgoingBandwidthInBytes`.
//! Units are decimal, as tc and Docker count them: `bit`/`kbit`/`mbit`/`gbit` are bits per
//! second, `B`/`KB`/`MB`/`GB` (or a bare number) bytes per second.

/// Bytes per second for `spec`, or an error naming the spec and the accepted forms.
pub fn bytes_per_second(spec: &str) -> Result<u64, String> {
    let s = spec.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let bad = || format!("--max-bandwidth {spec:?}: give a rate such as 10mbit, 500kbit, 2MB or 125000 (bytes per second)");
    let n: f64 = number.parse().map_err(|_| bad())?;
    let u = unit.trim();
    // A lowercase `b` alone would be ambiguous (bits or bytes): bytes need a capital `B`.
    let bytes_unit = u.ends_with('B');
    let (scale, bits) = match u.to_ascii_lowercase().as_str() {
        "" => (1.0, false),
        "bit" => (1.0, true),
        "kbit" => (1e3, true),
        "mbit" => (1e6, true),
        "gbit" => (1e9, true),
        "b" if bytes_unit => (1.0, false),
        "kb" if bytes_unit => (1e3, false),
        "mb" if bytes_unit => (1e6, false),
        "gb" if bytes_unit => (1e9, false),
        _ => return Err(bad()),
    };
    let per_second = if bits { n * scale / 8.0 } else { n * scale };
    let bytes = per_second.round();
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("--max-bandwidth {spec:?}: the rate must be at least 1 byte per second"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::bytes_per_second;

    #[test]
    fn bits_and_bytes_in_decimal_units() {
        assert_eq!(bytes_per_second("10mbit"), Ok(1_250_000));
        assert_eq!(bytes_per_second("500kbit"), Ok(62_500));
        assert_eq!(bytes_per_second("1gbit"), Ok(125_000_000));
        assert_eq!(bytes_per_second("2MB"), Ok(2_000_000));
        assert_eq!(bytes_per_second("1.5KB"), Ok(1_500));
        assert_eq!(bytes_per_second("125000"), Ok(125_000));
        assert_eq!(bytes_per_second("8bit"), Ok(1));
    }

    #[test]
    fn ambiguous_or_empty_rates_are_refused_by_name() {
        for bad in ["10mb", "10 furlongs", "mbit", "", "-5MB", "0", "1bit"] {
            let e = bytes_per_second(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
