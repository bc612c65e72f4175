use super::string_type;

string_type!(
    /// An RFC 3339 datetime in the strict profile atproto requires: uppercase `T` and `Z`,
    /// seconds always present, a timezone always present and `-00:00` refused.
    Datetime, "datetime", check_datetime
);

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        _ => 31,
    }
}

fn check_datetime(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 64 {
        return Err("wrong length".into());
    }
    let shape = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(shape(4, b'-') && shape(7, b'-') && shape(10, b'T') && shape(13, b':') && shape(16, b':')) {
        return Err("expected YYYY-MM-DDTHH:MM:SS".into());
    }
    let field = |from: usize, to: usize| digits(&b[from..to]).ok_or("expected digits");
    let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
    let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 20 {
            return Err("fractional seconds must have 1 to 20 digits".into());
        }
        rest = &frac[n..];
    }
    let mut ahead_of_utc = false;
    match rest {
        b"Z" => {}
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (th, tm) = (digits(&[*h1, *h2]).ok_or("bad offset")?, digits(&[*m1, *m2]).ok_or("bad offset")?);
            if th > 23 || tm > 59 {
                return Err("timezone offset out of range".into());
            }
            if *sign == b'-' && th == 0 && tm == 0 {
                return Err("'-00:00' is not allowed".into());
            }
            ahead_of_utc = *sign == b'+' && (th, tm) != (0, 0);
        }
        _ => return Err("timezone must be 'Z' or +HH:MM / -HH:MM".into()),
    }
    if year == 0 && ahead_of_utc {
        // In UTC this would fall before year 0000.
        return Err("datetime is before year 0000 in UTC".into());
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err("no such date".into());
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time".into());
    }
    Ok(())
}
