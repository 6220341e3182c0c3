//! The rules the ACL examples load: shared by `acl_scale` and `acl_stages` so both measure
//! the same rule set.

use hns_kernel::nft_acl::{Action, Direction, Rule, Scope};

/// `n` rules of one endpoint, varied by `seed` (a /24 per rule, ports and a range).
pub fn rules(n: usize, seed: usize) -> Vec<Rule> {
    (0..n)
        .map(|i| Rule {
            id: format!("r{i}"),
            action: if i % 3 == 0 { Action::Block } else { Action::Allow },
            direction: if i % 2 == 0 { Direction::In } else { Direction::Out },
            scope: Scope::Switch,
            priority: (100 + i * 10) as u16,
            protocols: vec![6],
            local: vec![],
            remote: vec![format!("10.{}.{}.0/24", seed % 250, i % 250).parse().unwrap()],
            local_ports: vec![(8000 + i as u16, 8000 + i as u16), (9000, 9100)],
            remote_ports: vec![],
        })
        .collect()
}
