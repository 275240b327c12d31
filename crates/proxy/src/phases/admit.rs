//! Phase 3b: admit — the org's tier rules that apply before any credential is chosen:
//! the katman-c source-address allow-list and the monthly budgets. A refusal here is
//! audited like any denial and opens no upstream connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use byok_domain::billing::round_amount;
use byok_domain::{Cidr, Org, TeamId, Tier};

use super::{Code, Refusal};
use crate::spend::SpendBook;

/// Header a trusted proxy puts the client's address in.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The address a call comes from: the TCP peer, or — when the peer is one of the
/// operator's `trusted_proxies` — the nearest address in `X-Forwarded-For` that is not
/// itself a trusted proxy. `Err` when a trusted proxy sent an address that does not parse.
pub(crate) fn source_address(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[Cidr],
) -> Result<Option<IpAddr>, Refusal> {
    let Some(peer) = peer.map(|p| p.ip().to_canonical()) else { return Ok(None) };
    let is_trusted = |addr: IpAddr| trusted.iter().any(|net| net.contains(addr));
    if !is_trusted(peer) {
        return Ok(Some(peer));
    }
    let mut hops = Vec::new();
    for value in headers.get_all(FORWARDED_FOR) {
        let text = value.to_str().map_err(|_| unreadable())?;
        for hop in text.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            hops.push(hop.parse::<IpAddr>().map_err(|_| unreadable())?.to_canonical());
        }
    }
    // From the nearest hop outwards: the first one the operator does not trust is the
    // client (anything further left was written by the client itself).
    let mut source = peer;
    for hop in hops.into_iter().rev() {
        source = hop;
        if !is_trusted(hop) {
            break;
        }
    }
    Ok(Some(source))
}

fn unreadable() -> Refusal {
    Refusal::new(
        Code::SourceForbidden,
        "a trusted proxy forwarded an X-Forwarded-For header that is not a list of IP addresses",
    )
}

/// Refuse a katman-c org's call from outside its allow-list.
pub(crate) fn check_source(org: &Org, source: Option<IpAddr>) -> Result<(), Refusal> {
    let controls = &org.controls;
    if org.tier != Tier::KatmanC || controls.allowed_source_cidrs.is_empty() {
        return Ok(());
    }
    match source {
        Some(addr) if controls.admits_source(addr) => Ok(()),
        Some(addr) => Err(Refusal::new(
            Code::SourceForbidden,
            format!("org {} accepts data-plane calls only from its allowed networks; {addr} is not in them", org.id),
        )),
        None => Err(Refusal::new(
            Code::SourceForbidden,
            format!("org {} accepts calls only from its allowed networks, and this call's address is unknown", org.id),
        )),
    }
}

/// Refuse a call once its org's or team's spend this month has reached the limit.
pub(crate) async fn check_budget(
    book: &Arc<SpendBook>,
    org: &Org,
    team: TeamId,
    currency: &str,
) -> Result<(), Refusal> {
    let budget = &org.budget;
    let team_limit = budget.teams.get(&team);
    if budget.monthly_limit.is_none() && team_limit.is_none() {
        return Ok(());
    }
    let (spent, team_spent) = book.spent(org.id, team).await.map_err(|e| {
        Refusal::failed(Code::StoreUnavailable, format_args!("cannot read org {}'s spend for its budget", org.id), e)
    })?;
    if let Some(limit) = budget.monthly_limit {
        if spent >= limit.decimal() {
            return Err(Refusal::new(
                Code::BudgetExceeded,
                format!(
                    "org {} has spent {} {currency} of its monthly budget of {limit} {currency} (this UTC month)",
                    org.id,
                    round_amount(spent)
                ),
            ));
        }
    }
    if let Some(limit) = team_limit {
        if team_spent >= limit.decimal() {
            return Err(Refusal::new(
                Code::BudgetExceeded,
                format!(
                    "team {team} of org {} has spent {} {currency} of its monthly budget of {limit} {currency} \
                     (this UTC month)",
                    org.id,
                    round_amount(team_spent)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|n| Cidr::parse(n).unwrap()).collect()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED_FOR, value.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_peers() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let trusted = nets(&["10.0.0.0/24"]);
        let at = |p: SocketAddr, h: &HeaderMap, t: &[Cidr]| source_address(Some(p), h, t).unwrap().unwrap().to_string();
        // Untrusted peer: its own address, whatever the header says.
        assert_eq!(at(peer, &xff("1.2.3.4"), &[]), "10.0.0.5");
        // Trusted peer: the nearest untrusted hop.
        assert_eq!(at(peer, &xff("9.9.9.9, 1.2.3.4"), &trusted), "1.2.3.4");
        assert_eq!(at(peer, &xff("1.2.3.4, 10.0.0.7"), &trusted), "1.2.3.4");
        // No header from a trusted peer: the peer.
        assert_eq!(at(peer, &HeaderMap::new(), &trusted), "10.0.0.5");
        // IPv4-mapped IPv6 peers are their IPv4 address.
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:4000".parse().unwrap();
        assert_eq!(at(mapped, &HeaderMap::new(), &[]), "10.0.0.5");
        assert!(source_address(Some(peer), &xff("not-an-ip"), &trusted).is_err());
    }
}
