//! Incidents: the alerts of one fault under its most likely root cause, so a person is
//! notified once.
//!
//! When an alert is due to go out for the first time in its episode, it is filed under
//! an incident:
//! - an alert held back by inhibition joins the incident of the alert holding it back
//!   (it waits while that alert has none yet);
//! - any other alert joins the newest live incident whose cause is its suspected service
//!   (its own service when none is suspected), or its own service, or a service its own
//!   service calls (directly or through others, in the service graph learned from the
//!   traces) unless it blames its own service: a symptom of that cause;
//! - otherwise it opens an incident of its own (alerts blaming their own service are
//!   filed first, so the alert on the cause leads), named after its suspected service (its
//!   own service without one), and leads it.
//!
//! The lead goes out as `notification: new`; every other member as `notification:
//! grouped`, once, without repeats or escalations (the lead's carry the incident), and its
//! resolution goes out as usual. Every event of a member carries the annotations
//! `incident` (16 hex characters) and `incident_cause`. An incident is live while a
//! member fires and for `incident_linger` after the last one resolved (a resolution for
//! want of data counts from the member's last window or score, so a gap in the input
//! does not keep an incident live); an alert that fires again within that time rejoins
//! it instead of paging again.

use serde::{Deserialize, Serialize};

use super::lifecycle::Notification;
use super::template::Fnv;
use super::{AlertEngine, Instance};
use crate::model::Alert;

/// One incident: its cause, its members and when one last fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    /// The service it is named after (the lead's suspected service, else its service).
    pub cause: String,
    /// Fingerprints of the alerts filed under it, the lead first.
    pub members: Vec<u64>,
    /// Event time a member was last seen firing (its series' last window or score while
    /// it fired, or its resolution).
    pub last_firing_ns: i64,
}

/// An alert's place in an incident, kept with its firing episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub id: u64,
    pub cause: String,
    /// Opened the incident (emitted as `new`); else a symptom (`grouped`).
    pub lead: bool,
}

impl AlertEngine {
    /// Files the due alerts under incidents and emits them: `free` (not held back by
    /// inhibition) in order, then the held ones whose inhibitor has an incident by then
    /// (`held`: held alert to its inhibitor). Held alerts whose inhibitor has none wait.
    pub(super) fn file_due(
        &mut self,
        free: &[u64],
        held: &[(u64, u64)],
        now: i64,
        out: &mut Vec<Alert>,
    ) {
        self.refresh_incidents(now);
        // alerts on the service they blame first: they lead, their callers' join them
        let mut free = free.to_vec();
        free.sort_by_key(|fp| {
            let i = &self.instances[fp];
            i.service.is_none() || i.notice.correlation.suspected != i.service
        });
        for fp in free {
            let joined = self.symptom_of(fp);
            self.file(fp, joined, now, out);
        }
        let mut waiting: Vec<(u64, u64)> = held.to_vec();
        loop {
            let before = waiting.len();
            waiting.retain(|&(fp, by)| {
                let inhibitor = self
                    .instances
                    .get(&by)
                    .and_then(|i| i.notice.incident.as_ref());
                let Some(id) = inhibitor.map(|m| m.id) else {
                    return true;
                };
                let at = self.incidents.iter().position(|i| i.id == id);
                self.file(fp, at, now, out);
                false
            });
            if waiting.len() == before {
                break;
            }
        }
    }

    /// Marks the incidents with a firing member as live now and forgets those quiet for
    /// longer than `incident_linger`.
    fn refresh_incidents(&mut self, now: i64) {
        let instances = &self.instances;
        for inc in &mut self.incidents {
            // when a firing member was last seen (its series' last window or score): an
            // event-time gap in the input does not keep an incident live
            let seen = inc
                .members
                .iter()
                .filter_map(|fp| instances.get(fp))
                .filter(|i| {
                    i.firing() && i.notice.incident.as_ref().is_some_and(|m| m.id == inc.id)
                })
                .map(|i| i.last_seen_ns.min(now))
                .max();
            if let Some(seen) = seen {
                inc.last_firing_ns = inc.last_firing_ns.max(seen);
            }
        }
        let linger = self.settings.incident_linger_ns;
        self.incidents
            .retain(|i| now.saturating_sub(i.last_firing_ns) <= linger);
    }

    /// What an alert blames: its suspected service, else its own service.
    fn cause_of(inst: &Instance) -> Option<&str> {
        inst.notice
            .correlation
            .suspected
            .as_deref()
            .or(inst.service.as_deref())
    }

    /// The newest live incident `fp` is a symptom of (see the module documentation).
    fn symptom_of(&self, fp: u64) -> Option<usize> {
        let inst = &self.instances[&fp];
        let service = inst.service.as_deref();
        let cause = Self::cause_of(inst)?;
        let reach = service.map(|s| self.correlator.graph.downstream(s));
        // an alert blaming its own service is a cause of its own, not a caller's symptom
        let own_cause =
            service.is_some() && service == inst.notice.correlation.suspected.as_deref();
        self.incidents.iter().rposition(|i| {
            i.cause == cause
                || service == Some(i.cause.as_str())
                || (!own_cause && reach.as_ref().is_some_and(|r| r.contains(i.cause.as_str())))
        })
    }

    /// Files `fp` under the incident at `at` (grouped) or a new one (new), and emits it.
    fn file(&mut self, fp: u64, at: Option<usize>, now: i64, out: &mut Vec<Alert>) {
        let membership = match at {
            Some(k) => {
                let inc = &mut self.incidents[k];
                // an alert that fires again within the linger is a member already
                if !inc.members.contains(&fp) {
                    inc.members.push(fp);
                }
                inc.last_firing_ns = now;
                Membership {
                    id: inc.id,
                    cause: inc.cause.clone(),
                    lead: false,
                }
            }
            None => {
                let inst = &self.instances[&fp];
                let cause = Self::cause_of(inst).map_or_else(
                    || self.settings.rules[inst.rule].name.clone(),
                    str::to_owned,
                );
                let id = Fnv::default()
                    .str(&cause)
                    .str(&inst.fingerprint)
                    .bytes(&now.to_be_bytes())
                    .finish();
                self.incidents.push(Incident {
                    id,
                    cause: cause.clone(),
                    members: vec![fp],
                    last_firing_ns: now,
                });
                self.stats.incidents += 1;
                Membership {
                    id,
                    cause,
                    lead: true,
                }
            }
        };
        let escalated = self.escalation_due(&self.instances[&fp], now);
        let lead = membership.lead;
        let (_, inst) = self.rule_and(fp);
        if let Some(sev) = escalated.filter(|_| lead) {
            inst.notice.severity = sev;
            inst.notice.escalated = true;
        }
        inst.notice.announced = true;
        inst.notice.incident = Some(membership);
        let n = if lead {
            Notification::New
        } else {
            Notification::Grouped
        };
        out.push(self.emit(fp, n, now));
    }

    /// A member resolved at `at`: its incident stays live for `incident_linger` from then.
    pub(super) fn member_resolved(&mut self, id: u64, at: i64) {
        if let Some(inc) = self.incidents.iter_mut().find(|i| i.id == id) {
            inc.last_firing_ns = inc.last_firing_ns.max(at);
        }
    }

    /// The live incidents, oldest first.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }
}
