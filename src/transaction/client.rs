//! The non-INVITE client transaction (RFC 3261 §17.1.2) as a sans-IO state
//! machine: events in, actions out. The driver in `mod.rs` owns the timers
//! and the transport.

use super::Timers;
use std::time::Duration;

/// RFC 3261 Figure 7 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientAction {
    /// Pass the request to the transport again.
    Retransmit,
    /// (Re)arm timer E to fire after the duration.
    ArmE(Duration),
    /// Arm timer F (transaction timeout).
    ArmF(Duration),
    /// Arm timer K (absorb response retransmissions).
    ArmK(Duration),
    /// Stop timers E and F.
    CancelEF,
    /// Hand the final response to the TU.
    DeliverFinal,
    /// Hand a provisional response to the TU.
    DeliverProvisional,
    /// Report a timeout (the TU treats it as 408, §8.1.3.1).
    Timeout,
    /// Report a transport failure (the TU treats it as 503, §8.1.3.1).
    TransportFailed,
    /// The transaction is over; remove it.
    Terminate,
}

#[derive(Debug)]
pub(crate) struct ClientNonInvite {
    state: ClientState,
    reliable: bool,
    timers: Timers,
    e: Duration,
}

impl ClientNonInvite {
    pub(crate) fn new(reliable: bool, timers: Timers) -> Self {
        ClientNonInvite {
            state: ClientState::Trying,
            reliable,
            timers,
            e: timers.t1,
        }
    }

    // The driver implements Timer K by delayed removal from the table; the
    // state machine keeps the full Figure 6 behaviour for tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn state(&self) -> ClientState {
        self.state
    }

    /// After the first transmission: timer F always, timer E on unreliable
    /// transports only (§17.1.2.2).
    pub(crate) fn start(&mut self) -> Vec<ClientAction> {
        let mut a = vec![ClientAction::ArmF(self.timers.t1 * 64)];
        if !self.reliable {
            a.push(ClientAction::ArmE(self.timers.t1));
        }
        a
    }

    /// Timer E: retransmit; the interval doubles up to T2 in Trying and is
    /// T2 in Proceeding.
    pub(crate) fn on_timer_e(&mut self) -> Vec<ClientAction> {
        match self.state {
            ClientState::Trying => {
                self.e = (self.e * 2).min(self.timers.t2);
                vec![ClientAction::Retransmit, ClientAction::ArmE(self.e)]
            }
            ClientState::Proceeding => {
                vec![ClientAction::Retransmit, ClientAction::ArmE(self.timers.t2)]
            }
            _ => vec![],
        }
    }

    /// Timer F: the transaction timed out.
    pub(crate) fn on_timer_f(&mut self) -> Vec<ClientAction> {
        match self.state {
            ClientState::Trying | ClientState::Proceeding => {
                self.state = ClientState::Terminated;
                vec![ClientAction::Timeout, ClientAction::Terminate]
            }
            _ => vec![],
        }
    }

    /// Timer K: stop absorbing retransmissions.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn on_timer_k(&mut self) -> Vec<ClientAction> {
        if self.state == ClientState::Completed {
            self.state = ClientState::Terminated;
            vec![ClientAction::Terminate]
        } else {
            vec![]
        }
    }

    /// A response matched this transaction.
    pub(crate) fn on_response(&mut self, status: u16) -> Vec<ClientAction> {
        match (self.state, status) {
            (ClientState::Trying | ClientState::Proceeding, 100..=199) => {
                self.state = ClientState::Proceeding;
                vec![ClientAction::DeliverProvisional]
            }
            (ClientState::Trying | ClientState::Proceeding, _) => {
                self.state = ClientState::Completed;
                let k = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                vec![
                    ClientAction::CancelEF,
                    ClientAction::DeliverFinal,
                    ClientAction::ArmK(k),
                ]
            }
            // Completed: retransmitted responses are absorbed.
            _ => vec![],
        }
    }

    /// The transport could not send the request (§17.1.4).
    pub(crate) fn on_transport_error(&mut self) -> Vec<ClientAction> {
        if matches!(self.state, ClientState::Trying | ClientState::Proceeding) {
            self.state = ClientState::Terminated;
            vec![ClientAction::TransportFailed, ClientAction::Terminate]
        } else {
            vec![]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> Timers {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }

    #[test]
    fn timer_e_schedule_unreliable() {
        let mut c = ClientNonInvite::new(false, timers());
        assert_eq!(
            c.start(),
            vec![
                ClientAction::ArmF(Duration::from_secs(32)),
                ClientAction::ArmE(Duration::from_millis(500))
            ]
        );
        let expect = [1000, 2000, 4000, 4000, 4000];
        for ms in expect {
            assert_eq!(
                c.on_timer_e(),
                vec![
                    ClientAction::Retransmit,
                    ClientAction::ArmE(Duration::from_millis(ms))
                ]
            );
        }
        // A provisional response: E continues at T2.
        assert_eq!(c.on_response(100), vec![ClientAction::DeliverProvisional]);
        assert_eq!(
            c.on_timer_e(),
            vec![
                ClientAction::Retransmit,
                ClientAction::ArmE(Duration::from_secs(4))
            ]
        );
        assert_eq!(
            c.on_response(200),
            vec![
                ClientAction::CancelEF,
                ClientAction::DeliverFinal,
                ClientAction::ArmK(Duration::from_secs(5))
            ]
        );
        assert_eq!(c.on_response(200), vec![], "retransmitted final absorbed");
        assert_eq!(c.on_timer_e(), vec![]);
        assert_eq!(c.on_timer_k(), vec![ClientAction::Terminate]);
        assert_eq!(c.state(), ClientState::Terminated);
    }

    #[test]
    fn reliable_sets_no_retransmit_timer_and_zero_k() {
        let mut c = ClientNonInvite::new(true, timers());
        assert_eq!(c.start(), vec![ClientAction::ArmF(Duration::from_secs(32))]);
        assert_eq!(
            c.on_response(481).last(),
            Some(&ClientAction::ArmK(Duration::ZERO))
        );
    }

    #[test]
    fn timeout_and_transport_error() {
        let mut c = ClientNonInvite::new(false, timers());
        c.start();
        assert_eq!(
            c.on_timer_f(),
            vec![ClientAction::Timeout, ClientAction::Terminate]
        );
        let mut c = ClientNonInvite::new(true, timers());
        c.start();
        assert_eq!(
            c.on_transport_error(),
            vec![ClientAction::TransportFailed, ClientAction::Terminate]
        );
        assert_eq!(c.on_timer_f(), vec![]);
    }
}
