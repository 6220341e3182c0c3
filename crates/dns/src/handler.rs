//! One DNS request in, one answer out: the decision between a local answer,
//! a forwarded one and an error.
//!
//! A handler belongs to one network (each listener gets one), so a query can
//! only ever be answered from the table of the network it arrived on. The
//! table is read once per query through `ArcSwap::load`, so a query sees one
//! whole table, the old or the new, never a mix.
//!
//! Answers:
//! - a query whose source is outside the network's subnets: none at all, the
//!   query is dropped (counted as dropped);
//! - a local name (bare, with the suffix, or a reverse name of a local
//!   address): A/AAAA/PTR from the table, authoritative, TTL
//!   [`LOCAL_TTL`]; other types get NOERROR with no records, never NXDOMAIN
//!   (the name exists, and an NXDOMAIN would make clients forget its A
//!   record too), and are never forwarded;
//! - any other name: the upstreams' answer (see `forward`), or SERVFAIL if
//!   none of them answered (or too many forwards are already waiting), or
//!   REFUSED if the network has no upstreams
//!   (an internal network: "not served here" is the truth, and unlike
//!   SERVFAIL it is not a failure clients should retry or report as
//!   "Server failed");
//! - not a standard query: NOTIMP; not exactly one question: FORMERR; a class
//!   other than IN: REFUSED. A message that cannot be parsed at all gets at
//!   most a bare FORMERR header from hickory-server (no names in it).

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_server::net::NetError;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, PTR};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use crate::forward::EDNS_PAYLOAD;
use crate::view::Local;
use crate::{Network, Shared};

/// TTL of local answers: 0, i.e. "do not cache". Endpoint names appear and
/// disappear with containers and addresses get reused; with any TTL above 0
/// a client cache (the Windows DNS client, nscd, systemd-resolved) keeps a
/// stale or missing answer for that long, which is exactly the "name resolves
/// late / intermittently, disable client caching" complaint. Asking us again
/// costs microseconds on a local link.
pub(crate) const LOCAL_TTL: u32 = 0;

#[derive(Clone)]
pub(crate) struct Handler {
    network: Arc<Network>,
    shared: Arc<Shared>,
}

/// What to do with a query, decided while holding the table, carried out
/// after releasing it (answers are sent without holding any table).
enum Plan {
    Local {
        records: Vec<Record>,
        recursion: bool,
    },
    Forward {
        upstreams: Arc<[SocketAddr]>,
        may_become_local: bool,
    },
    Refuse,
}

impl Handler {
    pub fn new(network: Arc<Network>, shared: Arc<Shared>) -> Handler {
        Handler { network, shared }
    }

    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut out: R,
    ) -> Result<ResponseInfo, NetError> {
        // Answer EDNS with EDNS; the size we announce is also the limit
        // hickory truncates a UDP answer to (setting TC so the client retries
        // over TCP). Without EDNS the limit is 512 bytes.
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().clamp(512, EDNS_PAYLOAD));
            ours
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let stats = &self.shared.stats;

        // The builder is consumed by whichever answer is sent, hence a macro
        // rather than a closure.
        macro_rules! fail {
            ($code:expr) => {{
                stats.failed();
                return out
                    .send_response(builder.error_msg(&request.metadata, $code))
                    .await;
            }};
        }
        if request.metadata.op_code != OpCode::Query {
            fail!(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            fail!(ResponseCode::FormErr)
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            fail!(ResponseCode::Refused);
        }

        let plan = {
            let table = self.network.table.load();
            match table.lookup(query.name()) {
                Some(local) => Plan::Local {
                    records: local_records(local, query.original().name(), query.query_type()),
                    recursion: !table.upstreams.is_empty(),
                },
                None if table.upstreams.is_empty() => Plan::Refuse,
                None => Plan::Forward {
                    upstreams: table.upstreams.clone(),
                    may_become_local: table.could_become_local(query.name()),
                },
            }
        };

        let mut meta = Metadata::response_from_request(&request.metadata);
        match plan {
            Plan::Local { records, recursion } => {
                stats.local();
                meta.authoritative = true;
                meta.recursion_available = recursion;
                out.send_response(builder.build(meta, records.iter(), none(), none(), none()))
                    .await
            }
            Plan::Refuse => fail!(ResponseCode::Refused),
            Plan::Forward {
                upstreams,
                may_become_local,
            } => {
                let Some(fwd) = self
                    .shared
                    .forwarder
                    .forward(&upstreams, query.original())
                    .await
                else {
                    fail!(ResponseCode::ServFail)
                };
                stats.forwarded(fwd.from_cache);
                let aged = |records: &[Record]| -> Vec<Record> {
                    let mut records = records.to_vec();
                    for r in &mut records {
                        r.ttl = r.ttl.saturating_sub(fwd.age);
                    }
                    records
                };
                let answers = aged(&fwd.answer.answers);
                let mut authorities = aged(&fwd.answer.authorities);
                let additionals = aged(&fwd.answer.additionals);
                if may_become_local && answers.is_empty() {
                    // A container with this name may start any moment: make
                    // the negative answer uncacheable for the client.
                    for r in authorities
                        .iter_mut()
                        .filter(|r| r.record_type() == RecordType::SOA)
                    {
                        r.ttl = 0;
                    }
                }
                meta.recursion_available = true;
                meta.response_code = fwd.answer.rcode;
                let response = builder.build(
                    meta,
                    answers.iter(),
                    authorities.iter(),
                    none(),
                    additionals.iter(),
                );
                out.send_response(response).await
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if !self.network.table.load().serves(request.src().ip()) {
            debug!(src = %request.src(), "DNS query from outside the network dropped");
            self.shared.stats.dropped();
            // Nothing is sent; hickory only wants a summary for its own bookkeeping.
            return ResponseInfo::from(Header {
                metadata: Metadata::response_from_request(&request.metadata),
                counts: HeaderCounts::default(),
            });
        }
        match self.respond(request, response_handle).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, src = %request.src(), "DNS answer could not be sent");
                self.shared.stats.dropped();
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

fn none<'a>() -> std::iter::Empty<&'a Record> {
    std::iter::empty()
}

/// The records of a local name for one query type. `owner` is the question's
/// name as the client wrote it, so the answer matches its question exactly.
fn local_records(local: Local<'_>, owner: &Name, qtype: RecordType) -> Vec<Record> {
    let record = |data: RData| Record::from_rdata(owner.clone(), LOCAL_TTL, data);
    match (local, qtype) {
        (Local::Name(entry), RecordType::A | RecordType::AAAA | RecordType::ANY) => {
            let a = entry.v4.iter().map(|ip| RData::A(A(*ip)));
            let aaaa = entry.v6.iter().map(|ip| RData::AAAA(AAAA(*ip)));
            match qtype {
                RecordType::A => a.map(record).collect(),
                RecordType::AAAA => aaaa.map(record).collect(),
                _ => a.chain(aaaa).map(record).collect(),
            }
        }
        (Local::Reverse(names), RecordType::PTR | RecordType::ANY) => names
            .into_iter()
            .map(|name| record(RData::PTR(PTR(name))))
            .collect(),
        _ => Vec::new(),
    }
}
