//! JSON lines on standard input drive the node; replies go to standard output.

use std::collections::HashMap;

use serde_json::Value;

use crate::support::{NodeProcess, json};

#[test]
fn json_lines_on_stdin_drive_the_node_and_bad_lines_get_refusals() {
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(&root.path().join("node"), &[]);
    let mut input = String::new();
    input.push_str(r#"{"req":1,"cmd":"put","key":"k","value":"v"}"#);
    input.push('\n');
    input.push_str(r#"{"req":2,"cmd":"put_doc","key":"d","doc":{"x":"é 日本 🦀"}}"#);
    input.push('\n');
    input.push_str(r#"{"req":3,"cmd":"put","key":"both","value":"a","value_hex":"00"}"#);
    input.push('\n');
    input.push_str(r#"{"req":4,"cmd":"put","key":"h","value_hex":"0g"}"#);
    input.push('\n');
    input.push_str(r#"{"req":5,"cmd":"add_address","address":"/ip4/127.0.0.1/tcp/1"}"#);
    input.push('\n');
    input.push_str(r#"{"req":6,"cmd":"set_mode","mode":"client"}"#);
    input.push('\n');
    input.push_str("{\"cmd\":\"no_such_command\"}\n");
    input.push_str("this is not json\n");
    input.push('\n');
    node.write_stdin(input.as_bytes());
    // Not UTF-8, and a line over the 1 MiB limit.
    node.write_stdin(b"{\"cmd\":\"get\",\"key\":\"\xff\"}\n");
    let mut long = vec![b'x'; (1 << 20) + 10];
    long.push(b'\n');
    node.write_stdin(&long);

    let mut replies: HashMap<String, Value> = HashMap::new();
    let mut refusals = Vec::new();
    while replies.len() < 6 || refusals.len() < 5 {
        let line = json(&node.next_line());
        assert_eq!(line["type"], "reply", "{line}");
        if line["req"].is_null() {
            assert_eq!(line["ok"], false, "{line}");
            refusals.push(line["error"].as_str().unwrap().to_string());
        } else {
            replies.insert(line["req"].to_string(), line);
        }
    }
    assert_eq!(replies["1"]["ok"], true, "{}", replies["1"]);
    assert_eq!(replies["1"]["result"]["key"], "k");
    assert_eq!(replies["2"]["ok"], true, "{}", replies["2"]);
    assert_eq!(replies["3"]["ok"], false);
    assert!(
        replies["3"]["error"]
            .as_str()
            .unwrap()
            .contains("exactly one")
    );
    assert_eq!(replies["4"]["ok"], false);
    assert!(replies["4"]["error"].as_str().unwrap().contains("hex"));
    assert_eq!(replies["5"]["ok"], false);
    assert!(replies["5"]["error"].as_str().unwrap().contains("/p2p/"));
    assert_eq!(
        replies["6"],
        json(r#"{"type":"reply","req":6,"ok":true,"result":"client"}"#)
    );
    refusals.sort();
    let expected = [
        "unknown variant `no_such_command`",
        "expected ident",
        "empty line",
        "not UTF-8",
        "longer than 1048576 bytes",
    ];
    for e in expected {
        assert!(
            refusals.iter().any(|r| r.contains(e)),
            "{e:?} not in {refusals:?}"
        );
    }

    // The node still works after all that; requests with string ids; the document comes
    // back exactly.
    node.write_stdin(
        b"{\"req\":\"g\",\"cmd\":\"get_doc\",\"key\":\"d\"}\n{\"req\":\"m\",\"cmd\":\"mode\"}\n",
    );
    let mut got = HashMap::new();
    while got.len() < 2 {
        let line = json(&node.next_line());
        got.insert(line["req"].as_str().unwrap().to_string(), line);
    }
    assert_eq!(got["g"]["result"]["doc"]["x"], "é 日本 🦀");
    assert_eq!(got["m"]["result"], "client");

    // A command still running at the end of input is answered before the node stops.
    node.write_stdin(b"{\"req\":9,\"cmd\":\"get\",\"key\":\"k\"}\n");
    node.close_stdin();
    let (status, rest) = node.wait_exit();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<Value> = rest.iter().map(|l| json(l)).collect();
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert_eq!(rest[0]["req"], 9);
    assert_eq!(rest[0]["result"]["value"], "v");
    assert_eq!(rest[1]["type"], "stopped");
}
