//! Reading lines of bounded length, blocking and async.

use std::io::BufRead;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

pub(crate) use netabase_control::session::Line;

fn finish(buf: &mut Vec<u8>, max: usize) -> Line {
    let ended = buf.last() == Some(&b'\n');
    if ended {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > max {
        return Line::TooLong;
    }
    match String::from_utf8(std::mem::take(buf)) {
        Ok(s) => Line::Text(s),
        Err(_) => Line::NotUtf8,
    }
}

/// Reads one line of at most `max` bytes; a longer one is skipped up to its end.
pub(crate) fn read_line<R: BufRead>(reader: &mut R, max: usize) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let n = std::io::Read::take(&mut *reader, max as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    let line = finish(&mut buf, max);
    if line == Line::TooLong {
        // Skip to the end of the line without keeping it.
        loop {
            let (used, done) = skip_to_newline(reader.fill_buf()?);
            reader.consume(used);
            if done {
                break;
            }
        }
    }
    Ok(line)
}

/// How much of `chunk` (the reader's buffer) belongs to the line being skipped, and
/// whether that ends it (a newline, or the end of the input: an empty buffer).
fn skip_to_newline(chunk: &[u8]) -> (usize, bool) {
    match chunk.iter().position(|b| *b == b'\n') {
        Some(i) => (i + 1, true),
        None => (chunk.len(), chunk.is_empty()),
    }
}

/// Reads one line of at most `max` bytes from an async reader; a longer one is skipped up
/// to its end.
pub(crate) async fn read_line_async<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let n = reader
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    let line = finish(&mut buf, max);
    if line == Line::TooLong {
        loop {
            let (used, done) = skip_to_newline(reader.fill_buf().await?);
            reader.consume(used);
            if done {
                break;
            }
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_newlines_and_long_ones_are_skipped() {
        let input = b"one\r\ntwo\n0123456789abc\nthree\n\xff\xfe\nlast";
        let mut r = std::io::BufReader::with_capacity(4, &input[..]);
        let mut lines = Vec::new();
        loop {
            match read_line(&mut r, 8).unwrap() {
                Line::Eof => break,
                l => lines.push(l),
            }
        }
        assert_eq!(
            lines,
            vec![
                Line::Text("one".into()),
                Line::Text("two".into()),
                Line::TooLong,
                Line::Text("three".into()),
                Line::NotUtf8,
                Line::Text("last".into()),
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let mut r = &b"12345678\n123456789\n"[..];
        assert_eq!(read_line(&mut r, 8).unwrap(), Line::Text("12345678".into()));
        assert_eq!(read_line(&mut r, 8).unwrap(), Line::TooLong);
        assert_eq!(read_line(&mut r, 8).unwrap(), Line::Eof);
    }

    #[tokio::test]
    async fn the_async_reader_bounds_lines_too() {
        let mut r = tokio::io::BufReader::with_capacity(3, &b"ok\n0123456789\nnext\n"[..]);
        assert_eq!(
            read_line_async(&mut r, 4).await.unwrap(),
            Line::Text("ok".into())
        );
        assert_eq!(read_line_async(&mut r, 4).await.unwrap(), Line::TooLong);
        assert_eq!(
            read_line_async(&mut r, 4).await.unwrap(),
            Line::Text("next".into())
        );
        assert_eq!(read_line_async(&mut r, 4).await.unwrap(), Line::Eof);
    }
}
