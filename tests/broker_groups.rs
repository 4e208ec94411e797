//! The broker the scale-out tests run on (tansu-eos, ci/tansu-eos) hands a consumer group
//! on when its leader goes during a rebalance. Stock tansu 0.6.0 kept the leader's name
//! when the leader left a group that was still forming: every other member's SyncGroup
//! was then answered REBALANCE_IN_PROGRESS, waiting for a leader that would never come,
//! and their partitions stayed unowned for good (the scale-out test's last instance,
//! after a scale-down, waited minutes for an assignment). Static members (spanline runs
//! with `group.instance.id`) also never expired: one that stopped without leaving stayed
//! in the group for ever.

mod support;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use support::Tansu;

const GROUP: &str = "handover";
const INPUT: &str = "input";
const WAIT: Duration = Duration::from_secs(60);

/// A static member of the group subscribed to `input`, with spanline's test session.
fn member(broker: &Tansu, instance: &str) -> BaseConsumer {
    let c: BaseConsumer = broker
        .client_config()
        .set("group.id", GROUP)
        .set("group.instance.id", instance)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "range,roundrobin")
        .create()
        .expect("consumer");
    c.subscribe(&[INPUT]).unwrap();
    c
}

fn owned(c: &BaseConsumer) -> usize {
    c.assignment().map_or(0, |a| a.count())
}

/// Polls every consumer of `all` until `done` holds; false when `WAIT` passes first.
fn poll_until(all: &[&BaseConsumer], done: &dyn Fn() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        for c in all {
            let _ = c.poll(Duration::from_millis(50));
        }
    }
    true
}

/// Asserts that `c`, the member left, comes to own both partitions.
fn takes_over(broker: &Tansu, c: &BaseConsumer) {
    assert!(
        poll_until(&[c], &|| owned(c) == 2),
        "the member left never owned the partitions (it owns {})\n{}",
        owned(c),
        broker.log_tail()
    );
}

#[test]
fn a_leader_leaving_a_forming_group_hands_it_over() {
    let Some(broker) = Tansu::start_durable_or_skip() else {
        return;
    };
    broker.create_topics(&[(INPUT, 2)]);
    // the first member leads the group: alone, it owns both partitions
    let leader = member(&broker, "first");
    assert!(
        poll_until(&[&leader], &|| owned(&leader) == 2),
        "the first member never owned the partitions"
    );
    // a second member joins: the group forms again, and waits for its leader, which is
    // not polled, so it neither gives up its partitions nor assigns them
    let follower = member(&broker, "second");
    let joining = Instant::now() + Duration::from_secs(2);
    assert!(poll_until(&[&follower], &|| Instant::now() >= joining));
    // the leader goes while the group forms (unsubscribing leaves the group, as spanline
    // does when it stops), and is gone for good
    leader.unsubscribe();
    assert!(poll_until(&[&leader], &|| owned(&leader) == 0));
    drop(leader);
    // the member left leads, and owns both partitions
    takes_over(&broker, &follower);
}

#[test]
fn a_static_member_that_stops_without_leaving_expires() {
    let Some(broker) = Tansu::start_durable_or_skip() else {
        return;
    };
    broker.create_topics(&[(INPUT, 2)]);
    let first = member(&broker, "first");
    assert!(poll_until(&[&first], &|| owned(&first) == 2));
    let second = member(&broker, "second");
    assert!(
        poll_until(&[&first, &second], &|| owned(&first) == 1
            && owned(&second) == 1),
        "the partitions were never shared"
    );
    // a static member closed without unsubscribing sends no LeaveGroup (KIP-345), as
    // when its process is killed: after its session it is no member any more, and the
    // other owns both partitions, whichever of them led
    drop(first);
    takes_over(&broker, &second);
}
