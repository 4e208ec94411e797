//! The root operations of the platform, written as the calls each service makes.

use crate::model::AttrValue;

use super::catalog::Target;
use super::gen::{Frame, Gen, Step};
use super::topology::{Ep, Local, Root, Svc};

/// Generates one whole trace of `root` starting at `start` at the gateway.
pub(crate) fn run(g: &mut Gen<'_>, root: Root, start: i64) {
    let inst = g.instance(Svc::Gateway);
    let mut f = Frame {
        svc: Svc::Gateway,
        inst,
        parent: 0,
        t: start,
    };
    // the root's failure is recorded on its span; nothing above it to tell
    let _ = g.root(&mut f, Target::Root(root), |g, f| {
        match root {
            Root::Chat => g.call(f, Ep::OrchChat, &[], chat)?,
            Root::History => g.call(f, Ep::OrchHistory, &[], history)?,
            Root::Documents => g.call(f, Ep::IngestDocuments, &[], documents)?,
            Root::AgentsRun => g.call(f, Ep::OrchRun, &[], agents_run)?,
        }
        g.work(f, 0.2, 0.4);
        Ok(())
    });
}

/// A call whose server does only its own work.
fn leaf(g: &mut Gen<'_>, f: &mut Frame, ep: Ep) -> Step {
    g.call(f, ep, &[], |_, _| Ok(()))
}

/// A call to an LLM: time to first token, then time per output token.
fn llm(
    g: &mut Gen<'_>,
    f: &mut Frame,
    ep: Ep,
    input_median: f64,
    output_median: f64,
    ms_per_token: f64,
) -> Step {
    let input = g.lognormal(input_median, 0.5).round().max(1.0) as i64;
    let output = if output_median > 0.0 {
        g.lognormal(output_median, 0.6).round().max(1.0) as i64
    } else {
        0
    };
    let extra = [
        ("gen_ai.usage.input_tokens", AttrValue::Int(input)),
        ("gen_ai.usage.output_tokens", AttrValue::Int(output)),
    ];
    g.call(f, ep, &extra, |g, f| {
        g.work(f, output as f64 * ms_per_token, 0.15);
        Ok(())
    })
}

fn embed(g: &mut Gen<'_>, f: &mut Frame, input_median: f64) -> Step {
    llm(g, f, Ep::OpenaiEmbed, input_median, 0.0, 0.0)
}

/// Orchestrator: `POST /chat`, a planner call, a fan-out to the tool agents, then
/// sequential synthesis calls.
fn chat(g: &mut Gen<'_>, f: &mut Frame) -> Step {
    g.local(f, Local::AgentOrchestrator, |g, f| {
        leaf(g, f, Ep::RedisGet)?;
        leaf(g, f, Ep::PgSelectMessages)?;
        g.call(f, Ep::PlannerPlan, &[], plan)?;
        fan_out(g, f)?;
        // draft, then critique and refine
        for _ in 0..1 + g.pick(3) {
            llm(g, f, Ep::AnthropicChat, 2400.0, 180.0, 6.0)?;
        }
        leaf(g, f, Ep::PgInsertMessages)?;
        leaf(g, f, Ep::RedisSet)
    })?;
    g.work(f, 0.4, 0.5);
    Ok(())
}

/// The tool agents the plan asked for, called in parallel.
fn fan_out(g: &mut Gen<'_>, f: &mut Frame) -> Step {
    let (search, code) = match g.pick(10) {
        0..=5 => (true, true),
        6..=8 => (true, false),
        _ => (false, true),
    };
    let t0 = f.t;
    let mut end = t0;
    let mut result = Ok(());
    if search {
        let mut b = *f;
        let r = g.call(&mut b, Ep::SearchQuery, &[], search_agent);
        result = result.and(r);
        end = end.max(b.t);
    }
    if code {
        let mut b = *f;
        g.work(&mut b, 0.05, 0.3); // dispatch of the second branch
        let r = g.call(&mut b, Ep::CodeRun, &[], code_agent);
        result = result.and(r);
        end = end.max(b.t);
    }
    f.t = end;
    result
}

/// Planner agent: one planning LLM call.
fn plan(g: &mut Gen<'_>, f: &mut Frame) -> Step {
    g.local(f, Local::AgentPlanner, |g, f| {
        g.work(f, 0.5, 0.5);
        llm(g, f, Ep::OpenaiChat, 1500.0, 120.0, 5.0)
    })
}

/// Search agent: embed the query, query the vector store, rerank.
fn search_agent(g: &mut Gen<'_>, f: &mut Frame) -> Step {
    g.local(f, Local::AgentSearch, |g, f| {
        embed(g, f, 40.0)?;
        leaf(g, f, Ep::VectorQuery)?;
        g.work(f, 2.0, 0.5);
        Ok(())
    })
}

/// Code agent: write code with an LLM, run it in the sandbox, sometimes fix it.
fn code_agent(g: &mut Gen<'_>, f: &mut Frame) -> Step {
    g.local(f, Local::AgentCoder, |g, f| {
        llm(g, f, Ep::AnthropicChat, 3000.0, 260.0, 6.0)?;
        g.local(f, Local::ToolSandbox, |g, f| {
            g.work(f, 180.0, 0.8);
            Ok(())
        })?;
        if g.chance(0.3) {
            llm(g, f, Ep::AnthropicChat, 3500.0, 120.0, 6.0)?;
        }
        Ok(())
    })
}

/// Orchestrator: `GET /history`, cache first, database on a miss.
fn history(g: &mut Gen<'_>, f: &mut Frame) -> Step {
    leaf(g, f, Ep::RedisGet)?;
    if g.chance(0.35) {
        leaf(g, f, Ep::PgSelectMessages)?;
        leaf(g, f, Ep::RedisSet)?;
    }
    g.work(f, 0.2, 0.5);
    Ok(())
}

/// Orchestrator: `POST /agents/run`, a loop of plan + tool steps, then a summary.
fn agents_run(g: &mut Gen<'_>, f: &mut Frame) -> Step {
    g.local(f, Local::AgentOrchestrator, |g, f| {
        leaf(g, f, Ep::PgSelectAgents)?;
        for _ in 0..2 + g.pick(5) {
            g.call(f, Ep::PlannerPlan, &[], plan)?;
            if g.chance(0.6) {
                g.call(f, Ep::SearchQuery, &[], search_agent)?;
            } else {
                g.call(f, Ep::CodeRun, &[], code_agent)?;
            }
        }
        llm(g, f, Ep::OpenaiChatMini, 4000.0, 200.0, 3.0)?;
        leaf(g, f, Ep::PgInsertRuns)
    })
}

/// Ingest API: store the document, queue it; the indexer chunks, embeds and stores it.
fn documents(g: &mut Gen<'_>, f: &mut Frame) -> Step {
    leaf(g, f, Ep::PgInsertDocuments)?;
    g.publish(f, Svc::Indexer, |g, f| {
        g.local(f, Local::ChunkDocument, |g, f| {
            g.work(f, 8.0, 0.6);
            Ok(())
        })?;
        embed(g, f, 2000.0)?;
        leaf(g, f, Ep::VectorUpsert)?;
        leaf(g, f, Ep::PgUpdateDocuments)
    })?;
    g.work(f, 0.3, 0.5);
    Ok(())
}
