//! A misbehaving server gets errors back, never a panic or a hang.

use std::time::Duration;

use gearman_client::{AdminClient, Client, ClientError, Job, JobError, JobRequest, Worker, WorkerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn res(code: u32, body: &[u8]) -> Vec<u8> {
    let mut p = b"\0RES".to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// A one-connection fake server: reads a little, then writes `answer`, then waits.
async fn fake_server(answer: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&answer).await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

async fn client_error_for(answer: Vec<u8>) -> ClientError {
    let addr = fake_server(answer).await;
    let c = Client::new([addr]).expect("client");
    tokio::time::timeout(Duration::from_secs(5), c.run(JobRequest::new("f", "x")))
        .await
        .expect("no hang")
        .expect_err("must fail")
}

#[tokio::test]
async fn wrong_reply_type_is_a_protocol_error() {
    let err = client_error_for(res(20, b"H:1\x000\x000\x000\x000")).await;
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn garbage_bytes_close_the_connection() {
    let err = client_error_for(b"\0XYZ\0\0\0\x01\0\0\0\0".to_vec()).await;
    assert!(err.is_connection_error(), "{err:?}");
    let err = client_error_for(res(99, b"")).await;
    assert!(err.is_connection_error(), "{err:?}");
    let err = client_error_for(b"hello there\n".to_vec()).await;
    assert!(err.is_connection_error(), "{err:?}");
}

#[tokio::test]
async fn malformed_job_created_is_rejected() {
    // JOB_CREATED takes one argument; a WORK_COMPLETE body without a NUL is malformed.
    let mut answer = res(8, b"H:1");
    answer.extend(res(13, b"no-nul-here"));
    let err = client_error_for(answer).await;
    assert!(err.is_connection_error(), "{err:?}");
}

#[tokio::test]
async fn server_closing_mid_job_is_connection_lost() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&res(8, b"H:1")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(s);
        }
    });
    let c = Client::new([addr]).expect("client");
    let s = c.submit(JobRequest::new("f", "x")).await.expect("created");
    let err = s.result().await.expect_err("lost");
    assert!(matches!(err, ClientError::ConnectionLost { .. }), "{err:?}");
}

#[tokio::test]
async fn worker_survives_a_malformed_assignment() {
    // JOB_ASSIGN_UNIQ with no NULs at all, then the server hangs up. The worker must
    // just reconnect (to the same broken server) without panicking.
    let addr = fake_server(res(31, b"garbage")).await;
    let worker = Worker::builder([&addr])
        .options(WorkerOptions { reconnect_min: Duration::from_millis(10), ..Default::default() })
        .function("f", |_job: Job| async move { Ok::<_, JobError>("") })
        .spawn()
        .expect("worker");
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(5), worker.shutdown()).await.expect("shutdown in time");
}

#[tokio::test]
async fn admin_timeout_breaks_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let (mut s, _): (TcpStream, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        // Never answer.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut admin = AdminClient::connect(&addr).await.expect("connect");
    admin.set_timeout(Some(Duration::from_millis(100)));
    assert!(matches!(admin.version().await, Err(ClientError::Timeout)));
    assert!(matches!(admin.version().await, Err(ClientError::ConnectionLost { .. })));
}

#[tokio::test]
async fn malformed_admin_rows_are_errors() {
    let addr = fake_server(b"not a status row\n.\n".to_vec()).await;
    let mut admin = AdminClient::connect(&addr).await.expect("connect");
    assert!(matches!(admin.status().await, Err(ClientError::Protocol(_))));
}
