//! Unit and property tests of the mDNS state machine and its DNS codec.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use proptest::prelude::*;

use super::dns::{self, DnsMessage, DnsName, DnsQuestion, RecordData, ResourceRecord};
use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// A node with one interface and one TCP listen address on it.
fn node(seed: u64, iface: &str) -> Mdns {
    let mut m = Mdns::new(MdnsConfig::default(), PeerId::from_seed(seed), seed);
    m.add_interface(at(0), ip(iface));
    m.set_listen_addresses(vec![
        format!("/ip4/{iface}/tcp/4001"),
        "/ip4/127.0.0.1/tcp/4001".to_string(),
    ]);
    m
}

fn outputs(m: &mut Mdns) -> Vec<MdnsOutput> {
    core::iter::from_fn(|| m.poll_output()).collect()
}

fn transmits(outputs: &[MdnsOutput]) -> Vec<Vec<u8>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            MdnsOutput::Transmit { packet, .. } => Some(packet.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_nodes_discover_each_other_by_query_and_response() {
    let mut a = node(1, "10.0.0.1");
    let mut b = node(2, "10.0.0.2");
    a.handle_timeout(at(0));
    let query = transmits(&outputs(&mut a));
    assert_eq!(query.len(), 1, "one query on the one interface");
    let parsed = DnsMessage::parse(&query[0]).unwrap();
    assert_eq!(parsed.questions[0].name, DnsName::from_dotted(SERVICE_NAME));
    assert_eq!(parsed.questions[0].qtype, dns::TYPE_PTR);

    let got = b.handle_datagram(at(1), ip("10.0.0.2"), sock("10.0.0.1:40000"), &query[0]);
    assert_eq!(got, Ok(MdnsPacketKind::Query));
    let response = transmits(&outputs(&mut b));
    assert_eq!(response.len(), 1);
    let parsed = DnsMessage::parse(&response[0]).unwrap();
    assert!(parsed.is_response());
    // Only the address on the interface the query came in on is announced.
    let txt: Vec<&RecordData> = parsed.additionals.iter().map(|r| &r.data).collect();
    let expected = format!(
        "dnsaddr=/ip4/10.0.0.2/tcp/4001/p2p/{}",
        PeerId::from_seed(2).to_base58()
    );
    assert_eq!(txt, vec![&RecordData::Txt(vec![expected.into_bytes()])]);

    let got = a.handle_datagram(at(2), ip("10.0.0.1"), sock("10.0.0.2:5353"), &response[0]);
    assert_eq!(got, Ok(MdnsPacketKind::Response { peers: 1 }));
    assert_eq!(
        outputs(&mut a),
        vec![MdnsOutput::Discovered {
            peer: PeerId::from_seed(2),
            address: "/ip4/10.0.0.2/tcp/4001".to_string(),
        }]
    );
    // The same answer again refreshes, it does not discover anew.
    a.handle_datagram(at(3), ip("10.0.0.1"), sock("10.0.0.2:5353"), &response[0])
        .unwrap();
    assert!(outputs(&mut a).is_empty());
    assert_eq!(a.discovered(at(3)).count(), 1);
}

#[test]
fn a_node_ignores_its_own_answers_and_unknown_interfaces() {
    let mut a = node(1, "10.0.0.1");
    a.handle_timeout(at(0));
    let query = transmits(&outputs(&mut a));
    // Multicast loops back: the node answers its own query and ignores the answer.
    a.handle_datagram(at(1), ip("10.0.0.1"), sock("10.0.0.1:1"), &query[0])
        .unwrap();
    let own = transmits(&outputs(&mut a));
    assert_eq!(
        a.handle_datagram(at(2), ip("10.0.0.1"), sock("10.0.0.1:5353"), &own[0]),
        Ok(MdnsPacketKind::Response { peers: 0 })
    );
    assert!(outputs(&mut a).is_empty());
    assert_eq!(
        a.handle_datagram(at(2), ip("10.9.9.9"), sock("10.0.0.1:5353"), &own[0]),
        Err(MdnsError::UnknownInterface)
    );
    assert!(matches!(
        a.handle_datagram(at(2), ip("10.0.0.1"), sock("10.0.0.1:5353"), b"\x00\x01"),
        Err(MdnsError::Dns(_))
    ));
}

#[test]
fn queries_probe_fast_then_settle_at_the_query_interval() {
    let mut a = Mdns::new(
        MdnsConfig {
            query_interval: Duration::from_secs(10),
            ..MdnsConfig::default()
        },
        PeerId::from_seed(1),
        7,
    );
    assert_eq!(a.poll_timeout(), None);
    a.add_interface(at(0), ip("10.0.0.1"));
    let mut times = Vec::new();
    let mut now = at(0);
    for _ in 0..6 {
        now = a.poll_timeout().unwrap();
        a.handle_timeout(now);
        assert_eq!(transmits(&outputs(&mut a)).len(), 1);
        times.push(now.as_millis());
    }
    // 0, then 1 s, 2 s, 4 s, 8 s apart, then the query interval (10 s plus < 100 ms jitter).
    assert_eq!(&times[..5], &[0, 1_000, 3_000, 7_000, 15_000]);
    let last_gap = times[5] - times[4];
    assert!((10_000..10_100).contains(&last_gap), "{times:?}");
    let _ = now;
    // A removed interface sends no more queries.
    assert!(a.remove_interface(ip("10.0.0.1")));
    assert!(!a.remove_interface(ip("10.0.0.1")));
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn addresses_expire_after_their_ttl_unless_refreshed() {
    let mut a = node(1, "10.0.0.1");
    let mut b = Mdns::new(
        MdnsConfig {
            ttl: Duration::from_secs(10),
            ..MdnsConfig::default()
        },
        PeerId::from_seed(2),
        2,
    );
    b.add_interface(at(0), ip("10.0.0.2"));
    b.set_listen_addresses(vec!["/ip4/10.0.0.2/tcp/1".to_string()]);
    let exchange = |a: &mut Mdns, b: &mut Mdns, now: Instant| {
        a.handle_timeout(now);
        for q in transmits(&outputs(a)) {
            b.handle_datagram(now, ip("10.0.0.2"), sock("10.0.0.1:9"), &q)
                .unwrap();
        }
        for r in transmits(&outputs(b)) {
            a.handle_datagram(now, ip("10.0.0.1"), sock("10.0.0.2:5353"), &r)
                .unwrap();
        }
    };
    exchange(&mut a, &mut b, at(0));
    assert!(matches!(
        &outputs(&mut a)[..],
        [MdnsOutput::Discovered { .. }]
    ));
    // The next timeout is the expiry (the query interval is five minutes).
    assert_eq!(a.poll_timeout(), Some(at(10_000)));
    a.handle_timeout(at(9_999));
    assert!(outputs(&mut a).is_empty());
    // Refreshed at 9 s: lives until 19 s.
    let response = {
        b.handle_datagram(
            at(9_000),
            ip("10.0.0.2"),
            sock("10.0.0.1:9"),
            &a_query(&mut a),
        )
        .unwrap();
        transmits(&outputs(&mut b))
    };
    a.handle_datagram(
        at(9_000),
        ip("10.0.0.1"),
        sock("10.0.0.2:5353"),
        &response[0],
    )
    .unwrap();
    a.handle_timeout(at(18_999));
    assert!(outputs(&mut a).is_empty());
    a.handle_timeout(at(19_000));
    assert_eq!(
        outputs(&mut a),
        vec![MdnsOutput::Expired {
            peer: PeerId::from_seed(2),
            address: "/ip4/10.0.0.2/tcp/1".to_string(),
        }]
    );
    assert_eq!(a.discovered(at(19_000)).count(), 0);
}

/// A query packet as `a` would send it.
fn a_query(a: &mut Mdns) -> Vec<u8> {
    a.query_packet()
}

/// A response laid out byte by byte as libp2p-mdns writes it: one PTR answer to a random
/// peer name, TXT records (class IN with cache flush) in the additional section.
fn libp2p_style_response(peer_name: &str, txts: &[&str], ttl: u32) -> Vec<u8> {
    let qname = |out: &mut Vec<u8>, name: &str| {
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    };
    let mut out = vec![
        0xAB,
        0xCD,
        0x84,
        0x00,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        txts.len() as u8,
    ];
    qname(&mut out, SERVICE_NAME);
    out.extend_from_slice(&[0x00, 0x0C, 0x00, 0x01]);
    out.extend_from_slice(&ttl.to_be_bytes());
    let mut name = Vec::new();
    qname(&mut name, peer_name);
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(&name);
    for txt in txts {
        out.extend_from_slice(&name);
        out.extend_from_slice(&[0x00, 0x10, 0x80, 0x01]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&((txt.len() + 1) as u16).to_be_bytes());
        out.push(txt.len() as u8);
        out.extend_from_slice(txt.as_bytes());
    }
    out
}

#[test]
fn a_libp2p_mdns_response_is_understood_and_translated_to_the_sender_ip() {
    let mut a = node(1, "10.0.0.1");
    let peer = PeerId::from_seed(9);
    let other = PeerId::from_seed(10);
    let p = peer.to_base58();
    let txts = [
        format!("dnsaddr=/ip4/10.0.0.5/tcp/4001/p2p/{p}"),
        format!("dnsaddr=/ip4/10.0.0.5/udp/4001/quic-v1/p2p/{p}"),
        // Another peer's address under the same name, a broken peer id, no prefix, a
        // non-IP address: all skipped.
        format!("dnsaddr=/ip4/10.0.0.5/tcp/1/p2p/{}", other.to_base58()),
        "dnsaddr=/ip4/10.0.0.5/tcp/2/p2p/notapeerid".to_string(),
        format!("/ip4/10.0.0.5/tcp/3/p2p/{p}"),
        format!("dnsaddr=/unix/tmp/p2p/{p}"),
    ];
    let txts: Vec<&str> = txts.iter().map(String::as_str).collect();
    let packet = libp2p_style_response("x7Kd93hsQ0aLmMzz02nDtT5yx1cRVb4W", &txts, 360);
    // Seen from 10.0.0.7 (say, behind a second address of the same host).
    let got = a.handle_datagram(at(0), ip("10.0.0.1"), sock("10.0.0.7:5353"), &packet);
    assert_eq!(got, Ok(MdnsPacketKind::Response { peers: 1 }));
    let found: Vec<MdnsOutput> = outputs(&mut a);
    assert_eq!(
        found,
        vec![
            MdnsOutput::Discovered {
                peer,
                address: "/ip4/10.0.0.7/tcp/4001".to_string()
            },
            MdnsOutput::Discovered {
                peer,
                address: "/ip4/10.0.0.7/udp/4001/quic-v1".to_string()
            },
        ]
    );
    // An answer ends the probing phase: the next query waits for the query interval.
    let next = a.poll_timeout().unwrap();
    assert!((300_000..300_100).contains(&next.as_millis()), "{next:?}");
}

#[test]
fn a_libp2p_mdns_query_is_answered() {
    // Header, one question _p2p._udp.local PTR IN, exactly as libp2p-mdns builds it.
    let mut query = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["_p2p", "_udp", "local"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0x00, 0x0C, 0x00, 0x01]);
    let mut a = node(1, "10.0.0.1");
    assert_eq!(
        a.handle_datagram(at(0), ip("10.0.0.1"), sock("10.0.0.3:5353"), &query),
        Ok(MdnsPacketKind::Query)
    );
    let response = transmits(&outputs(&mut a));
    let parsed = DnsMessage::parse(&response[0]).unwrap();
    assert_eq!(parsed.id, 0x1234);
    assert_eq!(parsed.flags, dns::FLAGS_RESPONSE);
    assert_eq!(parsed.answers.len(), 1);
    assert_eq!(parsed.answers[0].ttl, 360);
    let RecordData::Ptr(name) = &parsed.answers[0].data else {
        panic!("a PTR answer");
    };
    assert_eq!(name.labels().len(), 1);
    assert!((32..64).contains(&name.labels()[0].len()));
    assert!(parsed.additionals.iter().all(|r| r.name == *name));

    // DNS-SD enumeration is answered with the service name.
    let mut meta = vec![0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["_services", "_dns-sd", "_udp", "local"] {
        meta.push(label.len() as u8);
        meta.extend_from_slice(label.as_bytes());
    }
    meta.extend_from_slice(&[0, 0x00, 0x0C, 0x00, 0x01]);
    assert_eq!(
        a.handle_datagram(at(0), ip("10.0.0.1"), sock("10.0.0.3:5353"), &meta),
        Ok(MdnsPacketKind::ServiceDiscovery)
    );
    let answer = DnsMessage::parse(&transmits(&outputs(&mut a))[0]).unwrap();
    assert_eq!(
        answer.answers[0].data,
        RecordData::Ptr(DnsName::from_dotted(SERVICE_NAME))
    );
}

#[test]
fn many_addresses_are_split_over_several_packets() {
    let mut a = node(1, "10.0.0.1");
    let addresses: Vec<String> = (0..70).map(|p| format!("/ip4/10.0.0.1/tcp/{p}")).collect();
    a.set_listen_addresses(addresses);
    a.handle_datagram(
        at(0),
        ip("10.0.0.1"),
        sock("10.0.0.3:5353"),
        &a_query(&mut node(5, "10.0.0.3")),
    )
    .unwrap();
    let packets = transmits(&outputs(&mut a));
    assert_eq!(packets.len(), 3);
    let total: usize = packets
        .iter()
        .map(|p| {
            assert!(p.len() <= dns::MAX_PACKET_SIZE);
            DnsMessage::parse(p).unwrap().additionals.len()
        })
        .sum();
    assert_eq!(total, 70);
    // MdnsPacketKind by another node: all 70 of one peer, bounded by max_addresses_per_peer.
    let mut b = node(2, "10.0.0.2");
    for p in &packets {
        b.handle_datagram(at(0), ip("10.0.0.2"), sock("10.0.0.1:5353"), p)
            .unwrap();
    }
    let discovered = outputs(&mut b)
        .into_iter()
        .filter(|o| matches!(o, MdnsOutput::Discovered { .. }))
        .count();
    // 29, 29 and 12 addresses, at most 16 taken from each packet.
    assert_eq!(discovered, 16 + 16 + 12);
}

#[test]
fn the_discovered_table_and_the_send_queue_are_bounded() {
    let mut a = Mdns::new(
        MdnsConfig {
            max_discovered: 3,
            max_queued_transmits: 2,
            ..MdnsConfig::default()
        },
        PeerId::from_seed(1),
        1,
    );
    a.add_interface(at(0), ip("10.0.0.1"));
    a.set_listen_addresses(vec!["/ip4/10.0.0.1/tcp/1".to_string()]);
    for seed in 10..20 {
        let p = PeerId::from_seed(seed).to_base58();
        let txt = format!("dnsaddr=/ip4/10.0.0.9/tcp/1/p2p/{p}");
        let packet = libp2p_style_response("abc", &[&txt], 60);
        a.handle_datagram(at(0), ip("10.0.0.1"), sock("10.0.0.9:5353"), &packet)
            .unwrap();
    }
    assert_eq!(outputs(&mut a).len(), 3);
    let query = a_query(&mut node(5, "10.0.0.3"));
    for _ in 0..10 {
        a.handle_datagram(at(0), ip("10.0.0.1"), sock("10.0.0.3:5353"), &query)
            .unwrap();
    }
    assert_eq!(transmits(&outputs(&mut a)).len(), 2);
}

#[test]
fn addresses_are_translated_like_libp2p_does() {
    let v4 = sock("192.0.2.7:5353");
    assert_eq!(
        translate("/ip4/10.0.0.1/tcp/1", v4).as_deref(),
        Some("/ip4/192.0.2.7/tcp/1")
    );
    assert_eq!(
        translate("/dns4/example.org/tcp/1", v4).as_deref(),
        Some("/ip4/192.0.2.7/tcp/1")
    );
    assert_eq!(
        translate("/ip4/10.0.0.1", v4).as_deref(),
        Some("/ip4/192.0.2.7")
    );
    assert_eq!(translate("/unix/x", v4), None);
    assert_eq!(translate("ip4/1.2.3.4/tcp/1", v4), None);
    let link_local = sock("[fe80::1]:5353");
    assert_eq!(
        translate("/ip6/2001:db8::1/tcp/1", link_local).as_deref(),
        Some("/ip6/2001:db8::1/tcp/1")
    );
    assert_eq!(
        translate("/ip4/10.0.0.1/tcp/1", sock("[2001:db8::2]:5353")).as_deref(),
        Some("/ip6/2001:db8::2/tcp/1")
    );
    assert_eq!(leading_ip("/ip6/::1/tcp/1"), Some(ip("::1")));
    assert_eq!(leading_ip("/dns4/x/tcp/1"), None);
    assert_eq!(leading_ip("/ip4/999.1.1.1/tcp/1"), None);
}

#[test]
fn dnsaddr_strings_are_parsed_strictly() {
    let p = PeerId::from_seed(3);
    let s = format!("dnsaddr=/ip4/1.2.3.4/tcp/5/p2p/{}", p.to_base58());
    assert_eq!(
        parse_dnsaddr(s.as_bytes()),
        Some(("/ip4/1.2.3.4/tcp/5".to_string(), p))
    );
    let quoted = format!("\"{s}\"");
    assert!(parse_dnsaddr(quoted.as_bytes()).is_some());
    for bad in [
        "dnsaddr=/ip4/1.2.3.4/tcp/5".to_string(),
        format!("dnsaddr=ip4/p2p/{}", p.to_base58()),
        format!("dnsaddr=/ip4/1.2.3.4/p2p/{}/x", p.to_base58()),
        "dnsaddr=/ip4/1.2.3.4/p2p/0OIl".to_string(),
    ] {
        assert_eq!(parse_dnsaddr(bad.as_bytes()), None, "{bad}");
    }
    assert_eq!(parse_dnsaddr(&[0xFF, 0xFE]), None);
}

fn name_strategy() -> impl Strategy<Value = DnsName> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..5)
        .prop_map(DnsName::from_labels)
}

fn record_strategy() -> impl Strategy<Value = ResourceRecord> {
    (
        name_strategy(),
        any::<u16>(),
        any::<u32>(),
        prop_oneof![
            name_strategy().prop_map(RecordData::Ptr),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4)
                .prop_map(RecordData::Txt),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(RecordData::Other),
        ],
    )
        .prop_map(|(name, class, ttl, data)| {
            let rtype = match &data {
                RecordData::Ptr(_) => dns::TYPE_PTR,
                RecordData::Txt(_) => dns::TYPE_TXT,
                // Any type but the two decoded ones.
                RecordData::Other(_) => 1,
            };
            ResourceRecord {
                name,
                rtype,
                class,
                ttl,
                data,
            }
        })
}

fn message_strategy() -> impl Strategy<Value = DnsMessage> {
    let records = || proptest::collection::vec(record_strategy(), 0..4);
    (
        any::<u16>(),
        any::<u16>(),
        proptest::collection::vec(
            (name_strategy(), any::<u16>(), any::<u16>()).prop_map(|(name, qtype, qclass)| {
                DnsQuestion {
                    name,
                    qtype,
                    qclass,
                }
            }),
            0..3,
        ),
        records(),
        records(),
        records(),
    )
        .prop_map(
            |(id, flags, questions, answers, authorities, additionals)| DnsMessage {
                id,
                flags,
                questions,
                answers,
                authorities,
                additionals,
            },
        )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_codec_or_the_state_machine(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let _ = DnsMessage::parse(&bytes);
        let mut a = node(1, "10.0.0.1");
        let _ = a.handle_datagram(at(0), ip("10.0.0.1"), sock("10.0.0.2:5353"), &bytes);
        a.handle_timeout(at(1));
        while a.poll_output().is_some() {}
    }

    #[test]
    fn mutated_responses_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let p = PeerId::from_seed(4).to_base58();
        let txt = format!("dnsaddr=/ip4/10.0.0.5/tcp/1/p2p/{p}");
        let mut packet = libp2p_style_response("somepeername", &[&txt, &txt], 120);
        for (index, byte) in flips {
            let i = index.index(packet.len());
            packet[i] = byte;
        }
        packet.truncate(cut.index(packet.len() + 1));
        let mut a = node(1, "10.0.0.1");
        let _ = a.handle_datagram(at(0), ip("10.0.0.1"), sock("10.0.0.5:5353"), &packet);
        while a.poll_output().is_some() {}
    }

    #[test]
    fn messages_survive_encoding_and_parsing(message in message_strategy()) {
        match message.encode() {
            Ok(bytes) => prop_assert_eq!(DnsMessage::parse(&bytes), Ok(message)),
            // Only names over 255 bytes cannot be written.
            Err(e) => prop_assert_eq!(e, dns::DnsEncodeError::NameTooLong),
        }
    }
}
