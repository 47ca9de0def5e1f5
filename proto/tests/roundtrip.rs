//! The generated client and server talk to each other over a Unix socket, the control API's
//! default transport: every unary method once, and the server stream of `WatchEvents`.
//!
//! This pins the shape of the generated API (trait, server wrapper, client methods) that
//! `sluice-control` and `sluicectl` code against, and shows the Unix-socket wiring both need.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use sluice_proto::v1::control_client::ControlClient;
use sluice_proto::v1::control_server::{Control, ControlServer};
use sluice_proto::v1::{
    Backend, BackendState, DrainNodeRequest, DrainNodeResponse, DrainRequest, Event, EventKind,
    GetServiceRequest, GetStatusRequest, ListPeersRequest, ListPeersResponse, ListServicesRequest,
    ListServicesResponse, Peer, PeerState, Service, SetWeightRequest, Status, UndrainRequest,
    WatchEventsRequest,
};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Endpoint, Server, Uri};
use tonic::{Request, Response};

/// Answers from fixed data; `Drain`/`Undrain` echo the backend back with its state.
#[derive(Debug)]
struct Fixed;

fn backend(service: &str, name: &str, state: BackendState, drained: bool) -> Backend {
    let mut b = Backend {
        service: service.to_owned(),
        name: name.to_owned(),
        weight: 1,
        drained,
        ..Backend::default()
    };
    b.set_state(state);
    b
}

#[tonic::async_trait]
impl Control for Fixed {
    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<Status>, tonic::Status> {
        Ok(Response::new(Status {
            node: "node-a".to_owned(),
            generation: 7,
            ..Status::default()
        }))
    }

    async fn list_services(
        &self,
        _: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, tonic::Status> {
        Ok(Response::new(ListServicesResponse {
            services: vec![Service {
                name: "web".to_owned(),
                ..Service::default()
            }],
        }))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<Service>, tonic::Status> {
        let name = request.into_inner().name;
        if name != "web" {
            return Err(tonic::Status::not_found(format!("no service {name:?}")));
        }
        Ok(Response::new(Service {
            name,
            ..Service::default()
        }))
    }

    async fn set_weight(
        &self,
        request: Request<SetWeightRequest>,
    ) -> Result<Response<Backend>, tonic::Status> {
        let r = request.into_inner();
        if r.weight == 0 {
            return Err(tonic::Status::invalid_argument("weight 0: use Drain"));
        }
        let mut b = backend(&r.service, &r.backend, BackendState::Active, false);
        b.weight = r.weight;
        Ok(Response::new(b))
    }

    async fn drain(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<Backend>, tonic::Status> {
        let r = request.into_inner();
        Ok(Response::new(backend(
            &r.service,
            &r.backend,
            BackendState::Draining,
            true,
        )))
    }

    async fn undrain(
        &self,
        request: Request<UndrainRequest>,
    ) -> Result<Response<Backend>, tonic::Status> {
        let r = request.into_inner();
        Ok(Response::new(backend(
            &r.service,
            &r.backend,
            BackendState::Active,
            false,
        )))
    }

    type WatchEventsStream = tokio_stream::Iter<std::vec::IntoIter<Result<Event, tonic::Status>>>;

    async fn list_peers(
        &self,
        _: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, tonic::Status> {
        let mut p = Peer {
            name: "tor1".into(),
            address: "192.0.2.1".into(),
            ..Peer::default()
        };
        p.set_state(PeerState::Established);
        Ok(Response::new(ListPeersResponse { peers: vec![p] }))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, tonic::Status> {
        Ok(Response::new(DrainNodeResponse {
            drained: !request.into_inner().undrain,
            message: String::new(),
        }))
    }

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, tonic::Status> {
        let backlog = u64::from(request.into_inner().backlog);
        let events: Vec<_> = (1..=backlog)
            .map(|seq| {
                let mut e = Event {
                    seq,
                    ..Event::default()
                };
                e.set_kind(EventKind::ConfigApplied);
                Ok(e)
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(events)))
    }
}

#[tokio::test]
async fn client_and_server_over_a_unix_socket() {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "sluice-proto-roundtrip-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind the Unix socket");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(ControlServer::new(Fixed))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );

    // The URI is required by the API but unused: the connector ignores it and dials the socket.
    let dial = path.clone();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let dial = dial.clone();
            async move { UnixStream::connect(dial).await.map(TokioIo::new) }
        }))
        .await
        .expect("connect over the Unix socket");
    let mut client = ControlClient::new(channel);

    let status = client
        .get_status(GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner();
    assert_eq!((status.node.as_str(), status.generation), ("node-a", 7));

    let services = client
        .list_services(ListServicesRequest {})
        .await
        .expect("ListServices")
        .into_inner();
    assert_eq!(services.services.len(), 1);

    let missing = client
        .get_service(GetServiceRequest {
            name: "nope".to_owned(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let web = client
        .get_service(GetServiceRequest {
            name: "web".to_owned(),
        })
        .await
        .expect("GetService")
        .into_inner();
    assert_eq!(web.name, "web");

    let weighted = client
        .set_weight(SetWeightRequest {
            service: "web".to_owned(),
            backend: "b1".to_owned(),
            weight: 3,
        })
        .await
        .expect("SetWeight")
        .into_inner();
    assert_eq!(weighted.weight, 3);

    let drained = client
        .drain(DrainRequest {
            service: "web".to_owned(),
            backend: "b1".to_owned(),
        })
        .await
        .expect("Drain")
        .into_inner();
    assert_eq!(
        (drained.state(), drained.drained),
        (BackendState::Draining, true)
    );

    let undrained = client
        .undrain(UndrainRequest {
            service: "web".to_owned(),
            backend: "b1".to_owned(),
        })
        .await
        .expect("Undrain")
        .into_inner();
    assert_eq!(undrained.state(), BackendState::Active);
    let peers = client
        .list_peers(ListPeersRequest {})
        .await
        .expect("list_peers")
        .into_inner();
    assert_eq!(peers.peers[0].state(), PeerState::Established);
    let drained = client
        .drain_node(DrainNodeRequest { undrain: false })
        .await
        .expect("drain_node")
        .into_inner();
    assert!(drained.drained);

    let mut events = client
        .watch_events(WatchEventsRequest {
            follow: false,
            backlog: 3,
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.expect("event");
        assert_eq!(event.kind(), EventKind::ConfigApplied);
        seqs.push(event.seq);
    }
    assert_eq!(seqs, [1, 2, 3]);

    stop.send(()).expect("server still running");
    server.await.expect("server task").expect("server");
    std::fs::remove_file(&path).expect("remove the socket");
}
