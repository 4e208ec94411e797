//! Everything the generator would otherwise allocate per span, built once per
//! [`Workload`](super::Workload): interned names, shared resources, attribute templates.

use std::sync::Arc;

use crate::codec::avro_bin::{self, Reader};
use crate::model::{AttrValue, Attributes, AttributesBuilder, Resource};

use super::topology::{
    Ep, LocalDef, Proto, Root, Svc, CONSUMER_NAME, ENDPOINTS, LOCALS, PRODUCER_NAME, QUEUE_TOPIC,
    ROOTS,
};

/// The `service.namespace` of every service.
pub const NAMESPACE: &str = "agents-platform";
/// The `deployment.environment` of every service.
pub const ENVIRONMENT: &str = "production";

/// Encoded attribute items, to which per-span values are appended.
pub(crate) struct Tmpl {
    count: i64,
    items: Vec<u8>,
}

// Union branch order of `Attribute.value` in schemas/span.avsc; `Attributes::read`
// validates every encoding made here.
fn put_item(buf: &mut Vec<u8>, key: &str, value: AttrValue<'_>) {
    avro_bin::put_str(buf, key);
    match value {
        AttrValue::Str(s) => {
            avro_bin::put_long(buf, 0);
            avro_bin::put_str(buf, s);
        }
        AttrValue::Bool(b) => {
            avro_bin::put_long(buf, 1);
            avro_bin::put_bool(buf, b);
        }
        AttrValue::Int(i) => {
            avro_bin::put_long(buf, 2);
            avro_bin::put_long(buf, i);
        }
        AttrValue::Double(d) => {
            avro_bin::put_long(buf, 3);
            avro_bin::put_double(buf, d);
        }
    }
}

impl Tmpl {
    fn new() -> Self {
        Self {
            count: 0,
            items: Vec::new(),
        }
    }

    fn s(mut self, key: &str, value: &str) -> Self {
        put_item(&mut self.items, key, AttrValue::Str(value));
        self.count += 1;
        self
    }

    /// The template's attributes followed by `extra`, using `scratch` as buffer.
    pub(crate) fn encode(
        &self,
        scratch: &mut Vec<u8>,
        extra: &[(&str, AttrValue<'_>)],
    ) -> Attributes {
        let count = self.count + extra.len() as i64;
        if count == 0 {
            return Attributes::default();
        }
        scratch.clear();
        avro_bin::put_long(scratch, count);
        scratch.extend_from_slice(&self.items);
        for (k, v) in extra {
            put_item(scratch, k, *v);
        }
        scratch.push(0);
        Attributes::read(&mut Reader::new(scratch)).expect("workload attributes are valid avro")
    }
}

/// A span that serves work: a SERVER span (root or called) or a CONSUMER span.
pub(crate) struct Served {
    pub name: Arc<str>,
    pub attrs: Tmpl,
    /// Carries `http.response.status_code`.
    pub http: bool,
    pub work_ms: (f64, f64),
    pub natural_error: f64,
    pub error_status: i64,
    pub error_type: &'static str,
    pub error_message: &'static str,
    pub fail_ms: f64,
    /// Attributes of the `exception` event on a failed span.
    pub exception: Attributes,
}

/// The calling side: a CLIENT or PRODUCER span.
pub(crate) struct Calling {
    pub name: Arc<str>,
    pub attrs: Tmpl,
    pub http: bool,
}

/// What a served span is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Ep(Ep),
    Root(Root),
    Consumer,
}

/// Interned names, shared resources and attribute templates of the whole topology.
pub(crate) struct Catalog {
    /// Per service, per instance.
    pub resources: Vec<Vec<Arc<Resource>>>,
    pub clients: Vec<Calling>,
    pub servers: Vec<Served>,
    pub roots: Vec<Served>,
    pub consumer: Served,
    pub producer: Calling,
    pub locals: Vec<(Arc<str>, Tmpl)>,
}

fn exception(kind: &str, message: &str) -> Attributes {
    let mut b = AttributesBuilder::default();
    b.push("exception.type", AttrValue::Str(kind))
        .push("exception.message", AttrValue::Str(message));
    b.build()
}

fn resource(svc: Svc, instance: u8) -> Arc<Resource> {
    let def = svc.def();
    let host = format!("{}-{instance}", def.name);
    let mut b = AttributesBuilder::default();
    b.push("service.namespace", AttrValue::Str(NAMESPACE))
        .push("service.version", AttrValue::Str(def.version))
        .push("deployment.environment", AttrValue::Str(ENVIRONMENT))
        .push("host.name", AttrValue::Str(&host))
        .push("module", AttrValue::Str(def.module));
    Arc::new(Resource {
        service_name: Arc::from(def.name),
        attributes: b.build(),
    })
}

impl Catalog {
    pub(crate) fn new() -> Self {
        let resources = Svc::ALL
            .iter()
            .map(|&s| (0..s.def().instances).map(|i| resource(s, i)).collect())
            .collect();
        let mut clients = Vec::with_capacity(ENDPOINTS.len());
        let mut servers = Vec::with_capacity(ENDPOINTS.len());
        for def in &ENDPOINTS {
            let peer = Tmpl::new().s("peer.service", def.callee.name());
            let (client, server, http) = match def.proto {
                Proto::Http { method, route } => (
                    peer.s("http.request.method", method),
                    Tmpl::new()
                        .s("http.request.method", method)
                        .s("http.route", route),
                    true,
                ),
                Proto::Db {
                    system,
                    operation,
                    collection,
                } => (
                    peer.s("db.system", system)
                        .s("db.operation.name", operation)
                        .s("db.collection.name", collection),
                    Tmpl::new()
                        .s("db.system", system)
                        .s("db.operation.name", operation)
                        .s("db.collection.name", collection),
                    false,
                ),
                Proto::Llm {
                    system,
                    operation,
                    model,
                    route,
                } => {
                    let path = route.split_once(' ').map_or(route, |(_, p)| p);
                    (
                        peer.s("http.request.method", "POST")
                            .s("gen_ai.system", system)
                            .s("gen_ai.operation.name", operation)
                            .s("gen_ai.request.model", model),
                        Tmpl::new()
                            .s("http.request.method", "POST")
                            .s("http.route", path)
                            .s("gen_ai.system", system)
                            .s("gen_ai.request.model", model),
                        true,
                    )
                }
            };
            clients.push(Calling {
                name: Arc::from(def.client_name),
                attrs: client,
                http,
            });
            servers.push(Served {
                name: Arc::from(def.server_name),
                attrs: server,
                http,
                work_ms: def.work_ms,
                natural_error: def.natural_error,
                error_status: def.error_status,
                error_type: def.error_type,
                error_message: def.error_message,
                fail_ms: def.fail_ms,
                exception: exception(def.error_type, def.error_message),
            });
        }
        let roots = Root::ALL
            .iter()
            .map(|&r| {
                let (method, route, _) = ROOTS[r as usize];
                Served {
                    name: Arc::from(format!("{method} {route}")),
                    attrs: Tmpl::new()
                        .s("http.request.method", method)
                        .s("http.route", route),
                    http: true,
                    work_ms: (0.8, 0.4),
                    natural_error: 0.0005,
                    error_status: 500,
                    error_type: "500",
                    error_message: "internal server error",
                    fail_ms: 1.0,
                    exception: exception("500", "internal server error"),
                }
            })
            .collect();
        let messaging = || {
            Tmpl::new()
                .s("messaging.system", "kafka")
                .s("messaging.destination.name", QUEUE_TOPIC)
        };
        let consumer = Served {
            name: Arc::from(CONSUMER_NAME),
            attrs: messaging()
                .s("messaging.operation.type", "process")
                .s("messaging.consumer.group.name", "indexer"),
            http: false,
            work_ms: (1.0, 0.5),
            natural_error: 0.002,
            error_status: 0,
            error_type: "processing_error",
            error_message: "document could not be processed",
            fail_ms: 3.0,
            exception: exception("processing_error", "document could not be processed"),
        };
        let producer = Calling {
            name: Arc::from(PRODUCER_NAME),
            attrs: messaging().s("messaging.operation.type", "send"),
            http: false,
        };
        let locals = LOCALS
            .iter()
            .map(|&LocalDef { name, agent, tool }| {
                let mut t = Tmpl::new();
                if let Some((agent_name, agent_id)) = agent {
                    let op = if tool.is_some() {
                        "execute_tool"
                    } else {
                        "invoke_agent"
                    };
                    t = t
                        .s("gen_ai.operation.name", op)
                        .s("gen_ai.agent.name", agent_name)
                        .s("agent.id", agent_id);
                }
                if let Some(tool) = tool {
                    t = t.s("gen_ai.tool.name", tool);
                }
                (Arc::from(name), t)
            })
            .collect();
        Self {
            resources,
            clients,
            servers,
            roots,
            consumer,
            producer,
            locals,
        }
    }

    pub(crate) fn served(&self, target: Target) -> &Served {
        match target {
            Target::Ep(ep) => &self.servers[ep as usize],
            Target::Root(r) => &self.roots[r as usize],
            Target::Consumer => &self.consumer,
        }
    }
}
