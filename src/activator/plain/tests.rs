use super::*;

const CHUNKED: &[u8] = b"4;name=value\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n";

/// Decodes `input` fed in the given pieces; returns what was written and what was used.
fn decode(pieces: &[&[u8]]) -> (Result<usize, &'static str>, Vec<u8>, bool) {
    let mut chunked = Chunked::default();
    let mut out = Vec::new();
    let mut used = 0;
    for piece in pieces {
        match chunked.feed(piece, &mut out) {
            Ok(n) => used += n,
            Err(problem) => return (Err(problem), out, false),
        }
    }
    (Ok(used), out, chunked.is_done())
}

/// The data of chunks as this path writes them (plain sizes, no extensions).
fn data_of(mut chunks: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let line = chunks
            .iter()
            .position(|&b| b == b'\r')
            .expect("a size line");
        let size = usize::from_str_radix(std::str::from_utf8(&chunks[..line]).unwrap(), 16)
            .expect("a plain size");
        chunks = &chunks[line + 2..];
        if size == 0 {
            assert_eq!(
                chunks, b"\r\n",
                "the body ends with an empty trailer section"
            );
            return data;
        }
        data.extend_from_slice(&chunks[..size]);
        assert_eq!(&chunks[size..size + 2], b"\r\n");
        chunks = &chunks[size + 2..];
    }
}

#[test]
fn a_chunked_body_is_decoded_and_written_again_however_it_arrives() {
    for split in 0..=CHUNKED.len() {
        let (used, out, done) = decode(&[&CHUNKED[..split], &CHUNKED[split..]]);
        assert_eq!(used, Ok(CHUNKED.len()), "split at {split}");
        assert!(done, "split at {split}");
        assert_eq!(data_of(&out), b"Wikipedia", "split at {split}");
    }
    let one_by_one: Vec<&[u8]> = CHUNKED.chunks(1).collect();
    let (used, out, done) = decode(&one_by_one);
    assert_eq!((used, done), (Ok(CHUNKED.len()), true));
    assert_eq!(data_of(&out), b"Wikipedia");
}

#[test]
fn bytes_after_a_chunked_body_are_not_taken_as_part_of_it() {
    let mut input = CHUNKED.to_vec();
    input.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged");
    let (used, out, done) = decode(&[&input]);
    assert_eq!((used, done), (Ok(CHUNKED.len()), true));
    assert_eq!(data_of(&out), b"Wikipedia");
}

#[test]
fn broken_chunked_framing_is_refused() {
    for broken in [
        &b"g\r\n"[..],
        b"\r\n",
        b"4\nWiki\r\n",
        b"4\r\nWikiX\r\n",
        b"4\r\nWiki\n",
        b"10000000000000000\r\n",
        b"4;a\nb\r\n",
        b"0\r\nExpires: never\n\r\n",
        b"0\r\n\rX",
    ] {
        let (used, _, _) = decode(&[broken]);
        assert!(used.is_err(), "{:?}", String::from_utf8_lossy(broken));
    }
    let mut endless = b"0\r\n".to_vec();
    endless.extend(std::iter::repeat_n(b'a', MAX_CHUNK_FRAMING + 1));
    assert!(decode(&[&endless]).0.is_err(), "trailers without end");
}

/// The answer's head parsed, and the client's head.
fn answer(
    pod: &[u8],
    head_method: bool,
    close: bool,
) -> Result<Option<(Answer, String)>, UpstreamError> {
    let mut head = Vec::new();
    let answer = parse_answer(&mut pod.to_vec(), &mut head, head_method, close)?;
    Ok(answer.map(|answer| (answer, String::from_utf8(head).expect("text"))))
}

#[test]
fn an_answer_keeps_its_fields_and_reason_and_loses_those_of_the_hop() {
    let pod = b"HTTP/1.1 201 Made It\r\nX-Case: Kept\r\nConnection: x-secret, keep-alive\r\n\
                X-Secret: 1\r\nKeep-Alive: timeout=5\r\nx-fargo-billed-ms: 12\r\n\
                X-Fargo-Init-Ms: 3.2\r\nContent-Length: 3\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n\r\nabc";
    let (answer, head) = answer(pod, false, false).unwrap().expect("complete");
    assert!(head.starts_with("HTTP/1.1 201 Made It\r\n"), "{head}");
    assert!(head.contains("\r\nX-Case: Kept\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: 3\r\n"), "{head}");
    assert!(
        head.contains("\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n"),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    let lower = head.to_lowercase();
    for gone in [
        "x-secret",
        "keep-alive",
        "connection",
        "x-fargo-billed-ms",
        "x-fargo-init-ms",
    ] {
        assert!(!lower.contains(gone), "{gone}: {head}");
    }
    assert_eq!(answer.status, 201);
    assert_eq!(answer.framing, Framing::Length(3));
    assert!(answer.reusable);
    assert_eq!(answer.ran, Some((12, Some(4))));
    assert_eq!(&pod[answer.head_len..], b"abc");
}

#[test]
fn an_answer_without_a_date_gets_one_and_a_closing_one_says_so() {
    let (_, head) = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false, true)
        .unwrap()
        .expect("complete");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(head.ends_with("\r\nconnection: close\r\n\r\n"), "{head}");
}

#[test]
fn informational_answers_are_skipped_and_a_protocol_switch_is_refused() {
    let mut pod = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                    HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        .to_vec();
    let mut head = Vec::new();
    let answer = parse_answer(&mut pod, &mut head, false, false)
        .unwrap()
        .expect("complete");
    assert_eq!(answer.status, 200);
    assert_eq!(&pod[answer.head_len..], b"ok");
    assert!(!String::from_utf8_lossy(&head).contains("link"));
    let switched = answer_of(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n");
    assert!(matches!(switched, Err(UpstreamError::Malformed(_))));
}

fn answer_of(pod: &[u8]) -> Result<Option<(Answer, String)>, UpstreamError> {
    answer(pod, false, false)
}

#[test]
fn how_an_answer_is_framed() {
    let framed = |pod: &[u8], head_method: bool| {
        let (answer, head) = answer(pod, head_method, false).unwrap().expect("complete");
        (answer.framing, answer.reusable, head.to_lowercase())
    };
    let (framing, reusable, head) = framed(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
        false,
    );
    assert_eq!((framing, reusable), (Framing::Length(5), true));
    assert_eq!(head.matches("content-length").count(), 1, "{head}");

    let (framing, reusable, head) = framed(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
        false,
    );
    assert_eq!(
        (framing, reusable),
        (Framing::Chunked, false),
        "a length beside chunked"
    );
    assert!(!head.contains("content-length"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");

    let (framing, reusable, head) = framed(b"HTTP/1.1 200 OK\r\nx: y\r\n\r\n", false);
    assert_eq!((framing, reusable), (Framing::UntilClose, false));
    assert!(
        head.contains("transfer-encoding: chunked"),
        "sent on chunked: {head}"
    );

    let (framing, reusable, head) = framed(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", true);
    assert_eq!(
        (framing, reusable),
        (Framing::Empty, true),
        "an answer to HEAD"
    );
    assert!(head.contains("content-length: 7"), "{head}");

    let (framing, _, _) = framed(
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n",
        false,
    );
    assert_eq!(framing, Framing::Empty);

    let (_, reusable, _) = framed(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false);
    assert!(!reusable, "HTTP/1.0");
    let (_, reusable, _) = framed(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        false,
    );
    assert!(!reusable, "the pod closes");

    for refused in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    ] {
        assert!(
            matches!(answer_of(refused), Err(UpstreamError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(refused)
        );
    }
    assert!(matches!(
        answer_of(b"HTTP/1.1 200 OK\r\ncontent-le"),
        Ok(None)
    ));
}

#[test]
fn fields_are_read_as_the_lists_name_them_in_any_case() {
    for name in &HOP_BY_HOP {
        let upper = name.as_str().to_ascii_uppercase();
        assert!(field(name.as_str()).hop_by_hop, "{name} is hop-by-hop");
        assert!(field(&upper).hop_by_hop, "{upper} is hop-by-hop");
        assert!(!field(name.as_str()).replaced, "{name} is not replaced");
    }
    for name in &REPLACED_REQUEST_HEADERS {
        assert!(field(name.as_str()).replaced, "{name} is replaced");
        assert!(!field(name.as_str()).hop_by_hop, "{name} is not hop-by-hop");
    }
    let read = [
        ("Host", FieldKind::Host),
        ("CONTENT-LENGTH", FieldKind::ContentLength),
        ("Transfer-Encoding", FieldKind::TransferEncoding),
        ("connection", FieldKind::Connection),
        ("Expect", FieldKind::Expect),
        ("Upgrade", FieldKind::Upgrade),
        ("Date", FieldKind::Date),
        ("X-Fargo-Billed-Ms", FieldKind::Billed),
        ("x-fargo-init-ms", FieldKind::Init),
    ];
    for (name, kind) in read {
        assert_eq!(field(name).kind, kind, "{name}");
    }
    assert!(field("Connection").hop_by_hop && field("TE").hop_by_hop);
    // Near misses: another character where the name has `-` or a letter.
    for near in [
        "x_real-ip",
        "x-real_ip",
        "x.real-ip",
        "x-real-i0",
        "x-real-ipp",
    ] {
        assert!(!is_named(near.as_bytes(), b"x-real-ip"), "{near:?}");
    }
    assert!(is_named(b"X-Real-IP", b"x-real-ip"));
    // The one character besides `-` that `is_named` would take for it, CR, never reaches it:
    // `httparse` refuses it in a name.
    let mut headers = [httparse::EMPTY_HEADER; 4];
    let parsed =
        httparse::Request::new(&mut headers).parse(b"GET / HTTP/1.1\r\nx-real\rip: 1\r\n\r\n");
    assert!(parsed.is_err(), "{parsed:?}");
    for other in [
        "",
        "hos",
        "hosts",
        "x-private",
        "content-type",
        "keep-alive-x",
        "dat",
    ] {
        assert_eq!(field(other).kind, FieldKind::Other, "{other:?}");
        assert!(
            !field(other).hop_by_hop && !field(other).replaced,
            "{other:?}"
        );
    }
}
