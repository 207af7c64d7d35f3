//! A kube client whose API answers are scripted, for unit tests of the error
//! paths (conflicts, server errors). Behaviour that works is proven against the
//! real apiserver in `e2e/`; this only stands in where a real one would not
//! fail on cue.

use http::{Request, Response, StatusCode};
use kube::client::Body;
use tower_test::mock;

/// One scripted answer: the method and path prefix expected, and the reply.
pub struct Reply {
    /// `GET`, `PUT`, `PATCH`, …
    pub method: &'static str,
    /// The request path must start with this.
    pub path: &'static str,
    /// The status code to answer with.
    pub status: u16,
    /// The JSON body to answer with.
    pub body: serde_json::Value,
}

/// A client answering the requests in order with `replies`; a request that does
/// not match the next reply fails the test.
pub fn client(replies: Vec<Reply>) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        for reply in replies {
            let (request, respond) = handle.next_request().await.expect("a request was expected");
            assert_eq!(request.method().as_str(), reply.method, "{}", request.uri());
            assert!(
                request.uri().path().starts_with(reply.path),
                "{} {} does not start with {}",
                request.method(),
                request.uri(),
                reply.path
            );
            let response = Response::builder()
                .status(StatusCode::from_u16(reply.status).expect("status code"))
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply.body).expect("json")))
                .expect("response");
            respond.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), server)
}

/// A Kubernetes `Status` failure body.
pub fn status(code: u16, reason: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": format!("scripted {reason}"), "reason": reason, "code": code,
    })
}
