//! A small, bounded DNS message codec: what mDNS discovery needs and nothing more.
//!
//! [`DnsMessage::parse`] reads the header, the question section and the three record sections
//! of RFC 1035, following name compression pointers (only backwards, at most
//! [`MAX_POINTER_JUMPS`] per name) and checking every length against the packet, so that
//! arbitrary bytes give a [`DnsError`], never a panic, and memory stays proportional to the
//! packet. PTR and TXT record data are decoded; other record data are kept as raw bytes.
//! [`DnsMessage::encode`] writes names uncompressed.

use alloc::vec::Vec;

/// ResourceRecord type PTR.
pub const TYPE_PTR: u16 = 12;
/// ResourceRecord type TXT.
pub const TYPE_TXT: u16 = 16;
/// DnsQuestion type ANY.
pub const TYPE_ANY: u16 = 255;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// The header flags of an authoritative response (QR and AA set).
pub const FLAGS_RESPONSE: u16 = 0x8400;
/// The QR bit: set in responses.
pub const FLAG_QR: u16 = 0x8000;

/// The longest name on the wire, in bytes (RFC 1035 2.3.4).
pub const MAX_NAME_LENGTH: usize = 255;
/// The longest label, in bytes.
pub const MAX_LABEL_LENGTH: usize = 63;
/// The most compression pointers followed while reading one name.
pub const MAX_POINTER_JUMPS: usize = 16;
/// The largest packet parsed or written (the mDNS limit of RFC 6762 section 17).
pub const MAX_PACKET_SIZE: usize = 9000;

/// Why bytes are not a DNS message this codec accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The packet ends inside a header, name, record or field.
    #[error("truncated DNS message")]
    Truncated,
    /// The packet is larger than [`MAX_PACKET_SIZE`].
    #[error("DNS message of {0} bytes exceeds {max} bytes", max = MAX_PACKET_SIZE)]
    TooLarge(usize),
    /// A label length byte uses the reserved `01`/`10` prefixes.
    #[error("unsupported label type {0:#04x}")]
    BadLabel(u8),
    /// A compression pointer does not point backwards, or too many of them were followed.
    #[error("bad name compression pointer")]
    BadPointer,
    /// A name is longer than [`MAX_NAME_LENGTH`].
    #[error("name longer than 255 bytes")]
    NameTooLong,
    /// ResourceRecord data does not have the length its header states, or does not fit its type.
    #[error("malformed data of a record of type {0}")]
    BadRecordData(u16),
    /// Bytes follow the last record.
    #[error("{0} bytes after the last record")]
    TrailingBytes(usize),
}

/// Why a message cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsEncodeError {
    /// A label is empty or longer than [`MAX_LABEL_LENGTH`].
    #[error("label of {0} bytes (must be 1 to 63)")]
    BadLabel(usize),
    /// A name is longer than [`MAX_NAME_LENGTH`] on the wire.
    #[error("name longer than 255 bytes")]
    NameTooLong,
    /// A TXT string is longer than 255 bytes.
    #[error("TXT string of {0} bytes (at most 255)")]
    TxtTooLong(usize),
    /// ResourceRecord data are longer than 65535 bytes, or a section has more than 65535 entries.
    #[error("record data or section too large")]
    TooLarge,
}

/// A domain name as its labels (raw bytes; compared without regard to ASCII case).
#[derive(Debug, Clone, Default, Eq)]
pub struct DnsName {
    labels: Vec<Vec<u8>>,
}

impl DnsName {
    /// The name whose labels are the dot-separated parts of `dotted` (`"_p2p._udp.local"`).
    pub fn from_dotted(dotted: &str) -> DnsName {
        DnsName {
            labels: dotted
                .split('.')
                .filter(|l| !l.is_empty())
                .map(|l| l.as_bytes().to_vec())
                .collect(),
        }
    }

    /// The name made of `labels`.
    pub fn from_labels(labels: Vec<Vec<u8>>) -> DnsName {
        DnsName { labels }
    }

    /// Its labels.
    pub fn labels(&self) -> &[Vec<u8>] {
        &self.labels
    }

    /// Its length on the wire, uncompressed.
    pub fn wire_len(&self) -> usize {
        self.labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1
    }
}

impl PartialEq for DnsName {
    fn eq(&self, other: &DnsName) -> bool {
        self.labels.len() == other.labels.len()
            && self
                .labels
                .iter()
                .zip(&other.labels)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }
}

/// One entry of the question section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuestion {
    /// The name asked about.
    pub name: DnsName,
    /// The record type asked for.
    pub qtype: u16,
    /// The class (the top bit is mDNS's "unicast response" flag).
    pub qclass: u16,
}

/// The data of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// A PTR record: the name it points to.
    Ptr(DnsName),
    /// A TXT record: its character strings.
    Txt(Vec<Vec<u8>>),
    /// Any other type: the raw data.
    Other(Vec<u8>),
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    /// The owner name.
    pub name: DnsName,
    /// The record type (as on the wire, also for [`RecordData::Other`]).
    pub rtype: u16,
    /// The class (the top bit is mDNS's "cache flush" flag).
    pub class: u16,
    /// Time to live, in seconds.
    pub ttl: u32,
    /// The data.
    pub data: RecordData,
}

impl ResourceRecord {
    /// A PTR record.
    pub fn ptr(name: DnsName, ttl: u32, target: DnsName) -> ResourceRecord {
        ResourceRecord {
            name,
            rtype: TYPE_PTR,
            class: CLASS_IN,
            ttl,
            data: RecordData::Ptr(target),
        }
    }

    /// A TXT record.
    pub fn txt(name: DnsName, ttl: u32, strings: Vec<Vec<u8>>) -> ResourceRecord {
        ResourceRecord {
            name,
            rtype: TYPE_TXT,
            class: CLASS_IN,
            ttl,
            data: RecordData::Txt(strings),
        }
    }
}

/// A DNS message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsMessage {
    /// The transaction id.
    pub id: u16,
    /// The header flags (QR, opcode, AA, TC, RD, RA, Z, RCODE).
    pub flags: u16,
    /// The question section.
    pub questions: Vec<DnsQuestion>,
    /// The answer section.
    pub answers: Vec<ResourceRecord>,
    /// The authority section.
    pub authorities: Vec<ResourceRecord>,
    /// The additional section.
    pub additionals: Vec<ResourceRecord>,
}

/// A cursor over a packet.
struct Reader<'a> {
    packet: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DnsError> {
        let end = self.pos.checked_add(n).ok_or(DnsError::Truncated)?;
        let out = self.packet.get(self.pos..end).ok_or(DnsError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DnsError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a possibly compressed name at the cursor.
    fn name(&mut self) -> Result<DnsName, DnsError> {
        let (name, end) = read_name(self.packet, self.pos)?;
        self.pos = end;
        Ok(name)
    }
}

/// Reads the name at `start`; returns it and where the data after it begin.
fn read_name(packet: &[u8], start: usize) -> Result<(DnsName, usize), DnsError> {
    let mut labels = Vec::new();
    let mut wire_len = 1usize;
    let mut pos = start;
    // Where the caller continues: after the first pointer, or after the final zero byte.
    let mut resume = None;
    let mut jumps = 0usize;
    loop {
        let len = *packet.get(pos).ok_or(DnsError::Truncated)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                return Ok((DnsName { labels }, resume.unwrap_or(pos + 1)));
            }
            0x00 => {
                let len = usize::from(len);
                let label = packet
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(DnsError::Truncated)?;
                wire_len += len + 1;
                if wire_len > MAX_NAME_LENGTH {
                    return Err(DnsError::NameTooLong);
                }
                labels.push(label.to_vec());
                pos += 1 + len;
            }
            0xC0 => {
                let low = *packet.get(pos + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(len & 0x3F) << 8 | usize::from(low);
                jumps += 1;
                // Pointers only go backwards, so names always end.
                if target >= pos || jumps > MAX_POINTER_JUMPS {
                    return Err(DnsError::BadPointer);
                }
                resume.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(DnsError::BadLabel(len)),
        }
    }
}

/// Reads one resource record at the cursor.
fn read_record(reader: &mut Reader<'_>) -> Result<ResourceRecord, DnsError> {
    let name = reader.name()?;
    let rtype = reader.u16()?;
    let class = reader.u16()?;
    let ttl = reader.u32()?;
    let rdlength = usize::from(reader.u16()?);
    let start = reader.pos;
    let rdata = reader.bytes(rdlength)?;
    let data = match rtype {
        TYPE_PTR => {
            let (target, end) = read_name(reader.packet, start)?;
            if end != start + rdlength {
                return Err(DnsError::BadRecordData(rtype));
            }
            RecordData::Ptr(target)
        }
        TYPE_TXT => {
            let mut strings = Vec::new();
            let mut rest = rdata;
            while let Some((&len, tail)) = rest.split_first() {
                let len = usize::from(len);
                let s = tail.get(..len).ok_or(DnsError::BadRecordData(rtype))?;
                strings.push(s.to_vec());
                rest = &tail[len..];
            }
            RecordData::Txt(strings)
        }
        _ => RecordData::Other(rdata.to_vec()),
    };
    Ok(ResourceRecord {
        name,
        rtype,
        class,
        ttl,
        data,
    })
}

/// Reads `count` records (capacity bounded by what the remaining bytes can hold).
fn read_records(reader: &mut Reader<'_>, count: u16) -> Result<Vec<ResourceRecord>, DnsError> {
    // A record takes at least 11 bytes (a one-byte name and the fixed fields).
    let room = (reader.packet.len() - reader.pos) / 11;
    let mut records = Vec::with_capacity(usize::from(count).min(room));
    for _ in 0..count {
        records.push(read_record(reader)?);
    }
    Ok(records)
}

impl DnsMessage {
    /// Parses `packet`.
    pub fn parse(packet: &[u8]) -> Result<DnsMessage, DnsError> {
        if packet.len() > MAX_PACKET_SIZE {
            return Err(DnsError::TooLarge(packet.len()));
        }
        let mut reader = Reader { packet, pos: 0 };
        let id = reader.u16()?;
        let flags = reader.u16()?;
        let qdcount = reader.u16()?;
        let ancount = reader.u16()?;
        let nscount = reader.u16()?;
        let arcount = reader.u16()?;
        // A question takes at least 5 bytes.
        let room = (packet.len() - reader.pos) / 5;
        let mut questions = Vec::with_capacity(usize::from(qdcount).min(room));
        for _ in 0..qdcount {
            let name = reader.name()?;
            let qtype = reader.u16()?;
            let qclass = reader.u16()?;
            questions.push(DnsQuestion {
                name,
                qtype,
                qclass,
            });
        }
        let answers = read_records(&mut reader, ancount)?;
        let authorities = read_records(&mut reader, nscount)?;
        let additionals = read_records(&mut reader, arcount)?;
        if reader.pos != packet.len() {
            return Err(DnsError::TrailingBytes(packet.len() - reader.pos));
        }
        Ok(DnsMessage {
            id,
            flags,
            questions,
            answers,
            authorities,
            additionals,
        })
    }

    /// Whether this is a response (QR set).
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    /// Writes the message (names uncompressed).
    pub fn encode(&self) -> Result<Vec<u8>, DnsEncodeError> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for count in [
            self.questions.len(),
            self.answers.len(),
            self.authorities.len(),
            self.additionals.len(),
        ] {
            let count = u16::try_from(count).map_err(|_| DnsEncodeError::TooLarge)?;
            out.extend_from_slice(&count.to_be_bytes());
        }
        for q in &self.questions {
            write_name(&mut out, &q.name)?;
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
        }
        for r in self
            .answers
            .iter()
            .chain(&self.authorities)
            .chain(&self.additionals)
        {
            write_record(&mut out, r)?;
        }
        Ok(out)
    }
}

fn write_name(out: &mut Vec<u8>, name: &DnsName) -> Result<(), DnsEncodeError> {
    if name.wire_len() > MAX_NAME_LENGTH {
        return Err(DnsEncodeError::NameTooLong);
    }
    for label in &name.labels {
        if label.is_empty() || label.len() > MAX_LABEL_LENGTH {
            return Err(DnsEncodeError::BadLabel(label.len()));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    Ok(())
}

fn write_record(out: &mut Vec<u8>, record: &ResourceRecord) -> Result<(), DnsEncodeError> {
    write_name(out, &record.name)?;
    out.extend_from_slice(&record.rtype.to_be_bytes());
    out.extend_from_slice(&record.class.to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    let mut data = Vec::new();
    match &record.data {
        RecordData::Ptr(target) => write_name(&mut data, target)?,
        RecordData::Txt(strings) => {
            for s in strings {
                let len = u8::try_from(s.len()).map_err(|_| DnsEncodeError::TxtTooLong(s.len()))?;
                data.push(len);
                data.extend_from_slice(s);
            }
        }
        RecordData::Other(raw) => data.extend_from_slice(raw),
    }
    let len = u16::try_from(data.len()).map_err(|_| DnsEncodeError::TooLarge)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> DnsMessage {
        DnsMessage {
            id: 0xBEEF,
            flags: FLAGS_RESPONSE,
            questions: vec![],
            answers: vec![ResourceRecord::ptr(
                DnsName::from_dotted("_p2p._udp.local"),
                120,
                DnsName::from_dotted("peer123"),
            )],
            authorities: vec![],
            additionals: vec![ResourceRecord::txt(
                DnsName::from_dotted("peer123"),
                120,
                vec![b"dnsaddr=/ip4/10.0.0.1/tcp/1".to_vec(), b"".to_vec()],
            )],
        }
    }

    #[test]
    fn a_message_survives_encoding_and_parsing() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert_eq!(DnsMessage::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn names_compare_without_regard_to_ascii_case() {
        assert_eq!(
            DnsName::from_dotted("_P2P._udp.LOCAL"),
            DnsName::from_dotted("_p2p._udp.local")
        );
        assert_ne!(
            DnsName::from_dotted("_p2p._udp"),
            DnsName::from_dotted("_p2p._udp.local")
        );
    }

    #[test]
    fn compressed_names_are_followed_backwards_only() {
        // A query for _p2p._udp.local, then an answer whose name points at the question's.
        let mut m = DnsMessage {
            id: 1,
            flags: FLAGS_RESPONSE,
            questions: vec![DnsQuestion {
                name: DnsName::from_dotted("_p2p._udp.local"),
                qtype: TYPE_PTR,
                qclass: CLASS_IN,
            }],
            ..DnsMessage::default()
        };
        let mut bytes = m.encode().unwrap();
        bytes[7] = 1; // ancount
        bytes.extend_from_slice(&[0xC0, 12]); // pointer to offset 12
        bytes.extend_from_slice(&TYPE_PTR.to_be_bytes());
        bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
        bytes.extend_from_slice(&60u32.to_be_bytes());
        bytes.extend_from_slice(&2u16.to_be_bytes());
        bytes.extend_from_slice(&[0xC0, 17]); // to "_udp.local"
        let parsed = DnsMessage::parse(&bytes).unwrap();
        m.answers.push(ResourceRecord::ptr(
            DnsName::from_dotted("_p2p._udp.local"),
            60,
            DnsName::from_dotted("_udp.local"),
        ));
        assert_eq!(parsed, m);

        // A pointer to itself, or forwards, is refused.
        let mut looped = bytes.clone();
        let at = looped.len() - 2;
        looped[at + 1] = at as u8;
        assert_eq!(DnsMessage::parse(&looped), Err(DnsError::BadPointer));
    }

    #[test]
    fn malformed_packets_give_typed_errors() {
        let good = sample().encode().unwrap();
        assert_eq!(DnsMessage::parse(&good[..5]), Err(DnsError::Truncated));
        assert_eq!(
            DnsMessage::parse(&good[..good.len() - 1]),
            Err(DnsError::Truncated)
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            DnsMessage::parse(&trailing),
            Err(DnsError::TrailingBytes(1))
        );
        let mut bad_label = good.clone();
        bad_label[12] = 0x40;
        assert_eq!(DnsMessage::parse(&bad_label), Err(DnsError::BadLabel(0x40)));
        assert_eq!(
            DnsMessage::parse(&vec![0; MAX_PACKET_SIZE + 1]),
            Err(DnsError::TooLarge(MAX_PACKET_SIZE + 1))
        );
        // A header claiming 65535 answers in a short packet.
        let mut header = vec![0u8; 12];
        header[6] = 0xFF;
        header[7] = 0xFF;
        assert_eq!(DnsMessage::parse(&header), Err(DnsError::Truncated));
    }

    #[test]
    fn oversized_names_and_strings_are_not_written() {
        let long = DnsName::from_labels(vec![vec![b'a'; 63]; 4]);
        let m = DnsMessage {
            questions: vec![DnsQuestion {
                name: long,
                qtype: TYPE_PTR,
                qclass: CLASS_IN,
            }],
            ..DnsMessage::default()
        };
        assert_eq!(m.encode(), Err(DnsEncodeError::NameTooLong));
        let m = DnsMessage {
            answers: vec![ResourceRecord::txt(
                DnsName::from_dotted("a"),
                1,
                vec![vec![0; 256]],
            )],
            ..DnsMessage::default()
        };
        assert_eq!(m.encode(), Err(DnsEncodeError::TxtTooLong(256)));
        let m = DnsMessage {
            answers: vec![ResourceRecord::ptr(
                DnsName::from_labels(vec![vec![]]),
                1,
                DnsName::default(),
            )],
            ..DnsMessage::default()
        };
        assert_eq!(m.encode(), Err(DnsEncodeError::BadLabel(0)));
    }
}
