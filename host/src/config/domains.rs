//! Where each configured group reads and writes, by commit domain (what `beehive validate`
//! prints): outputs to another domain go through the group's outbox and a relay.

use super::Config;
use crate::registry::Domain;

/// The commit domains of one configured group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDomains {
    /// The group.
    pub group: String,
    /// The domains of the streams it reads.
    pub inputs: Vec<Domain>,
    /// Each stream it may write (its `publish` allow-list, then its dead-letter stream)
    /// with that stream's domain.
    pub outputs: Vec<(String, Domain)>,
}

impl GroupDomains {
    /// The outputs that land in a domain the group does not read: they go through the
    /// outbox, and readers see them a little after the input's acknowledgement.
    pub fn crossing(&self) -> Vec<&(String, Domain)> {
        self.outputs
            .iter()
            .filter(|(_, d)| !self.inputs.contains(d))
            .collect()
    }
}

/// The domains of every configured group, by group name.
pub fn group_domains(config: &Config) -> Vec<GroupDomains> {
    let registry = &config.registry;
    config
        .consumers
        .values()
        .map(|consumer| {
            let inputs = registry.group_domains(&consumer.group);
            let own = inputs.first().cloned().unwrap_or(Domain {
                pool: String::new(),
                slot: None,
            });
            let outputs = consumer
                .publish
                .iter()
                .chain(std::iter::once(&consumer.dead_letter))
                .map(|stream| (stream.clone(), registry.stream_domain(stream, &own)))
                .collect();
            GroupDomains {
                group: consumer.group.clone(),
                inputs,
                outputs,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_in_another_pool_cross() {
        let config = Config::parse(
            "default:\n  redis: localhost:6379:0\n  streams:\n    a: [g]\n    near: [x]\nsecond:\n  redis: localhost:6380:0\n  streams:\n    far: [y]\nconsumers:\n  g:\n    component: x.wasm\n    publish: [near, far]\n",
            std::path::Path::new("beehive.yaml"),
        )
        .unwrap();
        let domains = group_domains(&config);
        assert_eq!(domains.len(), 1);
        let g = &domains[0];
        let pool = |p: &str| Domain {
            pool: p.into(),
            slot: None,
        };
        assert_eq!(g.inputs, [pool("default")]);
        assert_eq!(
            g.outputs,
            [
                ("near".to_string(), pool("default")),
                ("far".to_string(), pool("second")),
                ("g-dead-letter".to_string(), pool("default")),
            ]
        );
        assert_eq!(g.crossing(), [&("far".to_string(), pool("second"))]);
    }

    #[test]
    fn outputs_in_another_slot_of_a_cluster_cross() {
        let config = Config::parse(
            "orders:
  cluster: [127.0.0.1:7000, 127.0.0.1:7001]
  streams:
    \"{orders}-created\": [billing]
    \"{orders}-billed\": [x]
    invoices: [y]
consumers:
  billing:
    component: x.wasm
    publish: [\"{orders}-billed\", invoices]
",
            std::path::Path::new("beehive.yaml"),
        )
        .unwrap();
        let g = &group_domains(&config)[0];
        let slot = |s: &str| Domain {
            pool: "orders".into(),
            slot: Some(crate::keys::slot(s)),
        };
        assert_eq!(g.inputs, [slot("orders")]);
        assert_eq!(
            g.outputs,
            [
                ("{orders}-billed".to_string(), slot("orders")),
                ("invoices".to_string(), slot("invoices")),
                ("{orders}billing-dead-letter".to_string(), slot("orders")),
            ]
        );
        assert_eq!(g.crossing(), [&("invoices".to_string(), slot("invoices"))]);
    }
}
