//! The endpoints the services of the simulated platform serve: how each call talks to
//! its peer, its latencies and how it fails.

use super::topology::Svc;

/// How a span talks to its peer, which decides its attributes.
pub(crate) enum Proto {
    Http {
        method: &'static str,
        route: &'static str,
    },
    Db {
        system: &'static str,
        operation: &'static str,
        collection: &'static str,
    },
    Llm {
        system: &'static str,
        operation: &'static str,
        model: &'static str,
        route: &'static str,
    },
}

/// An endpoint a service serves; each call to it is a CLIENT span in the caller and a
/// SERVER span in `callee`.
pub(crate) struct EndpointDef {
    pub callee: Svc,
    /// Name of the CLIENT span.
    pub client_name: &'static str,
    /// Name of the SERVER span.
    pub server_name: &'static str,
    pub proto: Proto,
    /// Median and lognormal shape of the server's own processing time (ms).
    pub work_ms: (f64, f64),
    /// Median network round trip (ms).
    pub rtt_ms: f64,
    /// Probability that the server fails by itself.
    pub natural_error: f64,
    /// HTTP status when it does (for non-HTTP endpoints only `error.type`).
    pub error_status: i64,
    pub error_type: &'static str,
    pub error_message: &'static str,
    /// Median time to fail (ms).
    pub fail_ms: f64,
    /// Callers retry a failed call once (most of the time).
    pub retryable: bool,
}

/// Endpoints, in [`ENDPOINTS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Ep {
    OrchChat,
    OrchRun,
    OrchHistory,
    IngestDocuments,
    PlannerPlan,
    SearchQuery,
    CodeRun,
    OpenaiChat,
    OpenaiChatMini,
    OpenaiEmbed,
    AnthropicChat,
    VectorQuery,
    VectorUpsert,
    PgSelectMessages,
    PgInsertMessages,
    PgSelectAgents,
    PgInsertRuns,
    PgInsertDocuments,
    PgUpdateDocuments,
    RedisGet,
    RedisSet,
}

impl Ep {
    pub(crate) fn def(self) -> &'static EndpointDef {
        &ENDPOINTS[self as usize]
    }
}

const fn http(
    callee: Svc,
    name: &'static str,
    method: &'static str,
    route: &'static str,
    work_ms: (f64, f64),
    natural_error: f64,
) -> EndpointDef {
    EndpointDef {
        callee,
        client_name: name,
        server_name: name,
        proto: Proto::Http { method, route },
        work_ms,
        rtt_ms: 0.6,
        natural_error,
        error_status: 500,
        error_type: "500",
        error_message: "internal server error",
        fail_ms: 4.0,
        retryable: false,
    }
}

const fn llm(
    callee: Svc,
    name: &'static str,
    system: &'static str,
    operation: &'static str,
    model: &'static str,
    route: &'static str,
    ttft_ms: f64,
) -> EndpointDef {
    EndpointDef {
        callee,
        client_name: name,
        server_name: route,
        proto: Proto::Llm {
            system,
            operation,
            model,
            route,
        },
        work_ms: (ttft_ms, 0.45),
        rtt_ms: 18.0,
        natural_error: 0.003,
        error_status: 429,
        error_type: "429",
        error_message: "rate limit exceeded",
        fail_ms: 25.0,
        retryable: true,
    }
}

const fn db(
    callee: Svc,
    name: &'static str,
    system: &'static str,
    operation: &'static str,
    collection: &'static str,
    work_ms: (f64, f64),
) -> EndpointDef {
    EndpointDef {
        callee,
        client_name: name,
        server_name: name,
        proto: Proto::Db {
            system,
            operation,
            collection,
        },
        work_ms,
        rtt_ms: 0.4,
        natural_error: 0.0008,
        error_status: 0,
        error_type: "db_error",
        error_message: "query failed",
        fail_ms: 1.5,
        retryable: true,
    }
}

/// Every endpoint, in [`Ep`] order.
pub(crate) const ENDPOINTS: [EndpointDef; 21] = {
    use Svc::*;
    [
        http(
            Orchestrator,
            "POST /chat",
            "POST",
            "/chat",
            (1.2, 0.5),
            0.0005,
        ),
        http(
            Orchestrator,
            "POST /agents/run",
            "POST",
            "/agents/run",
            (1.5, 0.5),
            0.0005,
        ),
        http(
            Orchestrator,
            "GET /history",
            "GET",
            "/history",
            (0.6, 0.5),
            0.0005,
        ),
        http(
            Ingest,
            "POST /documents",
            "POST",
            "/documents",
            (2.0, 0.6),
            0.001,
        ),
        http(Planner, "POST /plan", "POST", "/plan", (0.8, 0.5), 0.0005),
        http(
            Search,
            "POST /search",
            "POST",
            "/search",
            (0.7, 0.5),
            0.0005,
        ),
        http(
            Code,
            "POST /code/run",
            "POST",
            "/code/run",
            (0.9, 0.5),
            0.001,
        ),
        llm(
            Openai,
            "chat gpt-4o",
            "openai",
            "chat",
            "gpt-4o",
            "POST /v1/chat/completions",
            380.0,
        ),
        llm(
            Openai,
            "chat gpt-4o-mini",
            "openai",
            "chat",
            "gpt-4o-mini",
            "POST /v1/chat/completions",
            220.0,
        ),
        llm(
            Openai,
            "embeddings text-embedding-3-small",
            "openai",
            "embeddings",
            "text-embedding-3-small",
            "POST /v1/embeddings",
            45.0,
        ),
        llm(
            Anthropic,
            "chat claude-sonnet-4",
            "anthropic",
            "chat",
            "claude-sonnet-4",
            "POST /v1/messages",
            520.0,
        ),
        db(
            Vector,
            "query documents",
            "qdrant",
            "query",
            "documents",
            (22.0, 0.6),
        ),
        db(
            Vector,
            "upsert documents",
            "qdrant",
            "upsert",
            "documents",
            (35.0, 0.5),
        ),
        db(
            Postgres,
            "SELECT messages",
            "postgresql",
            "SELECT",
            "messages",
            (2.5, 0.7),
        ),
        db(
            Postgres,
            "INSERT messages",
            "postgresql",
            "INSERT",
            "messages",
            (3.5, 0.6),
        ),
        db(
            Postgres,
            "SELECT agents",
            "postgresql",
            "SELECT",
            "agents",
            (1.2, 0.5),
        ),
        db(
            Postgres,
            "INSERT runs",
            "postgresql",
            "INSERT",
            "runs",
            (3.0, 0.6),
        ),
        db(
            Postgres,
            "INSERT documents",
            "postgresql",
            "INSERT",
            "documents",
            (4.0, 0.6),
        ),
        db(
            Postgres,
            "UPDATE documents",
            "postgresql",
            "UPDATE",
            "documents",
            (3.0, 0.6),
        ),
        db(Redis, "GET", "redis", "GET", "sessions", (0.25, 0.5)),
        db(Redis, "SET", "redis", "SET", "sessions", (0.3, 0.5)),
    ]
};
