//! The simulated platform: its services, the endpoints they serve and who calls whom.
//! Their endpoints are defined in the sibling module `endpoints` and re-exported here.

pub(crate) use super::endpoints::{Ep, Proto, ENDPOINTS};

/// A service of the simulated platform (index into [`SERVICES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Svc {
    Gateway,
    Orchestrator,
    Planner,
    Search,
    Code,
    Openai,
    Anthropic,
    Vector,
    Postgres,
    Redis,
    Ingest,
    Indexer,
}

/// Static description of one service.
pub(crate) struct ServiceDef {
    pub name: &'static str,
    pub version: &'static str,
    /// The `module` resource attribute.
    pub module: &'static str,
    /// Instances, each its own `host.name` (and its own shared resource).
    pub instances: u8,
}

const fn svc(
    name: &'static str,
    version: &'static str,
    module: &'static str,
    instances: u8,
) -> ServiceDef {
    ServiceDef {
        name,
        version,
        module,
        instances,
    }
}

/// Every service, in [`Svc`] order.
pub(crate) const SERVICES: [ServiceDef; 12] = [
    svc("api-gateway", "2.14.1", "edge", 2),
    svc("orchestrator", "1.8.0", "agents", 3),
    svc("planner-agent", "0.9.3", "agents", 2),
    svc("search-agent", "1.2.0", "agents", 2),
    svc("code-agent", "0.7.5", "agents", 2),
    svc("llm-openai", "3.1.0", "llm", 2),
    svc("llm-anthropic", "3.1.0", "llm", 2),
    svc("vector-store", "1.11.2", "storage", 1),
    svc("postgres", "16.4", "storage", 1),
    svc("redis", "7.2.5", "storage", 1),
    svc("ingest-api", "1.4.2", "ingestion", 2),
    svc("indexer-worker", "1.4.2", "ingestion", 2),
];

const SERVICE_NAMES: [&str; 12] = {
    let mut names = [""; 12];
    let mut i = 0;
    while i < 12 {
        names[i] = SERVICES[i].name;
        i += 1;
    }
    names
};

impl Svc {
    /// Every service, in index order.
    pub(crate) const ALL: [Svc; 12] = [
        Svc::Gateway,
        Svc::Orchestrator,
        Svc::Planner,
        Svc::Search,
        Svc::Code,
        Svc::Openai,
        Svc::Anthropic,
        Svc::Vector,
        Svc::Postgres,
        Svc::Redis,
        Svc::Ingest,
        Svc::Indexer,
    ];

    pub(crate) fn def(self) -> &'static ServiceDef {
        &SERVICES[self as usize]
    }

    pub(crate) fn name(self) -> &'static str {
        self.def().name
    }

    /// The service called `name`.
    pub(crate) fn from_name(name: &str) -> Option<Svc> {
        Svc::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// All services of the synthetic platform.
pub fn services() -> &'static [&'static str] {
    &SERVICE_NAMES
}

/// The root operations (span names of the `api-gateway` root spans), most frequent first.
pub fn root_operations() -> &'static [&'static str] {
    &ROOT_NAMES
}

/// The caller→callee service edges the workload produces: CLIENT span's service → its
/// SERVER child's service, and PRODUCER span's service → its CONSUMER child's service.
pub fn topology_edges() -> Vec<(&'static str, &'static str)> {
    use Svc::*;
    [
        (Gateway, Orchestrator),
        (Gateway, Ingest),
        (Orchestrator, Redis),
        (Orchestrator, Postgres),
        (Orchestrator, Planner),
        (Orchestrator, Search),
        (Orchestrator, Code),
        (Orchestrator, Anthropic),
        (Orchestrator, Openai),
        (Planner, Openai),
        (Search, Openai),
        (Search, Vector),
        (Code, Anthropic),
        (Ingest, Postgres),
        (Ingest, Indexer),
        (Indexer, Openai),
        (Indexer, Vector),
        (Indexer, Postgres),
    ]
    .into_iter()
    .map(|(a, b)| (a.name(), b.name()))
    .collect()
}

/// A root operation: a request entering the platform at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Root {
    Chat,
    History,
    Documents,
    AgentsRun,
}

impl Root {
    pub(crate) const ALL: [Root; 4] = [Root::Chat, Root::History, Root::Documents, Root::AgentsRun];
}

/// Span names of the roots, in [`Root`] order.
const ROOT_NAMES: [&str; 4] = [
    "POST /v1/chat",
    "GET /v1/history",
    "POST /v1/documents",
    "POST /v1/agents/run",
];

/// (method, route, share of traffic) of the roots, in [`Root`] order.
pub(crate) const ROOTS: [(&str, &str, f64); 4] = [
    ("POST", "/v1/chat", 0.45),
    ("GET", "/v1/history", 0.30),
    ("POST", "/v1/documents", 0.13),
    ("POST", "/v1/agents/run", 0.12),
];

/// INTERNAL spans inside a service: agent invocations, tool executions, local steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Local {
    AgentOrchestrator,
    AgentPlanner,
    AgentSearch,
    AgentCoder,
    ToolSandbox,
    ChunkDocument,
}

/// An INTERNAL span: its name, the agent it belongs to (name, id) and the tool it runs.
pub(crate) struct LocalDef {
    pub name: &'static str,
    pub agent: Option<(&'static str, &'static str)>,
    pub tool: Option<&'static str>,
}

const fn local(
    name: &'static str,
    agent: Option<(&'static str, &'static str)>,
    tool: Option<&'static str>,
) -> LocalDef {
    LocalDef { name, agent, tool }
}

/// The INTERNAL spans, in [`Local`] order.
pub(crate) const LOCALS: [LocalDef; 6] = [
    local(
        "invoke_agent orchestrator",
        Some(("orchestrator", "agt-orchestrator-v2")),
        None,
    ),
    local(
        "invoke_agent planner",
        Some(("planner", "agt-planner-v3")),
        None,
    ),
    local(
        "invoke_agent researcher",
        Some(("researcher", "agt-researcher-v1")),
        None,
    ),
    local("invoke_agent coder", Some(("coder", "agt-coder-v4")), None),
    local(
        "execute_tool python_sandbox",
        Some(("coder", "agt-coder-v4")),
        Some("python_sandbox"),
    ),
    local("chunk document", None, None),
];

/// The queue between `ingest-api` and `indexer-worker`.
pub(crate) const QUEUE_TOPIC: &str = "documents";
/// Producer and consumer span names.
pub(crate) const PRODUCER_NAME: &str = "documents publish";
pub(crate) const CONSUMER_NAME: &str = "documents process";
