//! A destination for asynchronous invocations' records: an HTTP server of the test process
//! that keeps every JSON body POSTed to it.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::wait::eventually;

/// Records POSTed to a destination URL of this process, by path, with when each arrived.
#[derive(Clone, Default)]
pub struct Records {
    pub url: String,
    pub received: Arc<Mutex<Vec<(String, Value, Instant)>>>,
}

impl Records {
    /// Serves on `ip` (an address the activator may call: not loopback).
    pub async fn start(ip: IpAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .expect("a port for destination records");
        let addr = listener.local_addr().unwrap();
        let records = Records {
            url: format!("http://{addr}"),
            received: Arc::default(),
        };
        let received = records.received.clone();
        // On a thread and runtime of its own: the test that starts it ends, the others need it.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener.into_std().unwrap()).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let received = received.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |request: hyper::Request<hyper::body::Incoming>| {
                                let received = received.clone();
                                async move {
                                    let path = request.uri().path().to_string();
                                    let body = request
                                        .into_body()
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let record: Value =
                                        serde_json::from_slice(&body).unwrap_or(Value::Null);
                                    received
                                        .lock()
                                        .unwrap()
                                        .push((path, record, Instant::now()));
                                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                        Full::new(Bytes::from_static(b"ok")),
                                    ))
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        records
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.url)
    }

    /// Waits for the records POSTed to `path` until there are `count`.
    pub async fn wait(&self, path: &str, count: usize, seconds: u64) -> Vec<Value> {
        let want = format!("/{path}");
        eventually(seconds, &format!("{count} record(s) at {want}"), || {
            let found: Vec<Value> = self
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|(p, _, _)| *p == want)
                .map(|(_, record, _)| record.clone())
                .collect();
            async move { (found.len() >= count).then_some(found) }
        })
        .await
    }

    pub fn count(&self, path: &str) -> usize {
        let want = format!("/{path}");
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| *p == want)
            .count()
    }
}
