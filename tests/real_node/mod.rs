//! Shared by the tests that run pods on the local cluster's real node (tests/node.rs,
//! tests/install.rs): plain HTTP to pod and Service IPs.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.0 GET to `ip:port` (a pod or Service of the local cluster), bounded by `timeout`:
/// the status and the body.
pub async fn http_get(
    ip: &str,
    port: u16,
    path_and_query: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| format!("connecting to {ip}:{port}: {e}"))?;
        let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending to {ip}:{port}: {e}"))?;
        let mut response = Vec::new();
        // HTTP/1.0 without keep-alive: the server closes the connection after the response.
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("reading from {ip}:{port}: {e}"))?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{ip}:{port} sent no complete HTTP response: {response:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("{ip}:{port} sent no status line: {head:?}"))?;
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer from {ip}:{port} within {timeout:?}"))?
}
