//! Server version strings, frames split across reads, TCP options on the socket, oversized frames.

use super::*;

#[test]
fn server_versions() {
    assert_eq!(parse_server_version("15.18 (Debian 15.18-1.pgdg)"), 150_018);
    assert_eq!(parse_server_version("16devel"), 160_000);
    assert_eq!(parse_server_version("9.6.24"), 90_624);
    assert_eq!(parse_server_version("garbage"), 0);
}

#[tokio::test]
async fn frames_split_across_reads_and_copy_both() {
    // CopyBothResponse, then a ReadyForQuery split over two reads.
    let (mut server, client) = tokio::io::duplex(64);
    let mut frames = FrameReader::new(client);
    server
        .write_all(&[b'W', 0, 0, 0, 7, 0, 0, 0, b'Z', 0, 0])
        .await
        .unwrap();
    assert!(matches!(frames.next("t").await.unwrap(), Backend::CopyBoth));
    server.write_all(&[0, 5, b'I']).await.unwrap();
    assert!(matches!(
        frames.next("t").await.unwrap(),
        Backend::Message(Message::ReadyForQuery(_))
    ));
    server.write_all(&[b'?', 0, 0, 0, 4]).await.unwrap();
    assert!(matches!(
        frames.next("t").await,
        Err(WireError::Protocol(_))
    ));
    server.write_all(&[b'W', 0, 0, 0, 5, 0]).await.unwrap();
    assert!(matches!(
        frames.next("t").await,
        Err(WireError::Protocol(_))
    ));
    drop(server);
    assert!(matches!(
        frames.next("t").await,
        Err(WireError::Closed { .. })
    ));
}

#[tokio::test]
async fn the_connection_strings_tcp_options_reach_the_socket() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let options = TcpOptions {
        keepalives: true,
        keepalives_idle: Some(Duration::from_secs(7)),
        keepalives_interval: Some(Duration::from_secs(3)),
        keepalives_count: Some(4),
        tcp_user_timeout: Some(Duration::from_millis(9000)),
    };
    set_tcp_options(&tcp, options).unwrap();
    let socket = socket2::SockRef::from(&tcp);
    assert!(socket.keepalive().unwrap());
    assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
    assert_eq!(
        socket.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(3)
    );
    assert_eq!(socket.tcp_keepalive_retries().unwrap(), 4);
    assert_eq!(
        socket.tcp_user_timeout().unwrap(),
        Some(Duration::from_millis(9000))
    );

    set_tcp_options(
        &tcp,
        TcpOptions {
            keepalives: false,
            ..TcpOptions::default()
        },
    )
    .unwrap();
    assert!(!socket.keepalive().unwrap());
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_framer(bytes in proptest::collection::vec(0u8..=255, 0..200)) {
        let mut frames = FrameReader::new(tokio::io::empty());
        frames.buf.extend_from_slice(&bytes);
        // Stop at the first error or when a frame is incomplete.
        while let Ok(Some(_)) = frames.parse_buffered() {}
    }
}

#[tokio::test]
async fn a_huge_length_is_refused_before_any_allocation() {
    let (mut server, client) = tokio::io::duplex(64);
    let mut frames = FrameReader::new(client);
    server
        .write_all(&[b'd', 0x7f, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(matches!(
        frames.next("t").await,
        Err(WireError::Protocol(_))
    ));
    assert!(frames.buf.capacity() < 1 << 20);
}
