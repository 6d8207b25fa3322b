//! WAL positions ("16/B374D848") as integers, for comparing a client's last
//! write with a replica's replay position.

/// Parses PostgreSQL's `X/Y` LSN text.
pub fn parse(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some(hi << 32 | lo)
}

pub fn format(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_order() {
        assert_eq!(super::parse("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(super::format(0x16_B374_D848), "16/B374D848");
        assert!(super::parse("0/10") < super::parse("1/0"));
        assert_eq!(super::parse("nope"), None);
        assert_eq!(super::parse("1/100000000"), None);
    }
}
