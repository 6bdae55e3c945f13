//! What to change so the published CSIStorageCapacity objects of one node match
//! what its driver reports: one object per storage class, updated when a figure
//! changes, deleted when its class is gone or a duplicate (as external-provisioner's
//! capacity tracking keeps them).

/// The figures GetCapacity gave for one class on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub class: String,
    pub capacity: i64,
    pub maximum: Option<i64>,
}

/// A published object of this node (found by its managed-by label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub name: String,
    pub class: String,
    /// The node its topology selects; `None` when it selects no single node.
    pub node: Option<String>,
    pub capacity: Option<i64>,
    pub maximum: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create(Wanted),
    Update { name: String, wanted: Wanted },
    Delete { name: String },
}

/// The actions, creations and updates in the order of `wanted`, then deletions.
pub fn plan(node: &str, wanted: &[Wanted], published: &[Published]) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut kept: Vec<&str> = Vec::new();
    for want in wanted {
        let current = published
            .iter()
            .find(|p| p.class == want.class && p.node.as_deref() == Some(node));
        match current {
            None => actions.push(Action::Create(want.clone())),
            Some(p) => {
                kept.push(&p.name);
                if p.capacity != Some(want.capacity) || p.maximum != want.maximum {
                    actions.push(Action::Update {
                        name: p.name.clone(),
                        wanted: want.clone(),
                    });
                }
            }
        }
    }
    actions.extend(
        published
            .iter()
            .filter(|p| !kept.contains(&p.name.as_str()))
            .map(|p| Action::Delete {
                name: p.name.clone(),
            }),
    );
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(class: &str, capacity: i64) -> Wanted {
        Wanted {
            class: class.into(),
            capacity,
            maximum: Some(capacity),
        }
    }

    fn published(name: &str, class: &str, node: Option<&str>, capacity: i64) -> Published {
        Published {
            name: name.into(),
            class: class.into(),
            node: node.map(Into::into),
            capacity: Some(capacity),
            maximum: Some(capacity),
        }
    }

    fn update(name: &str, wanted: Wanted) -> Action {
        Action::Update {
            name: name.into(),
            wanted,
        }
    }

    fn delete(name: &str) -> Action {
        Action::Delete { name: name.into() }
    }

    #[test]
    fn published_objects_follow_the_driver() {
        type Case = (&'static str, Vec<Wanted>, Vec<Published>, Vec<Action>);
        let cases: Vec<Case> = vec![
            (
                "a new class is published",
                vec![want("fast", 10)],
                vec![],
                vec![Action::Create(want("fast", 10))],
            ),
            (
                "unchanged figures are left alone",
                vec![want("fast", 10)],
                vec![published("a", "fast", Some("n1"), 10)],
                vec![],
            ),
            (
                "a changed figure is updated in place",
                vec![want("fast", 7)],
                vec![published("a", "fast", Some("n1"), 10)],
                vec![update("a", want("fast", 7))],
            ),
            (
                "a gone class is deleted",
                vec![],
                vec![published("a", "fast", Some("n1"), 10)],
                vec![delete("a")],
            ),
            (
                "a duplicate is deleted, the first kept",
                vec![want("fast", 10)],
                vec![
                    published("a", "fast", Some("n1"), 10),
                    published("b", "fast", Some("n1"), 10),
                ],
                vec![delete("b")],
            ),
            (
                "an object for another topology is replaced",
                vec![want("fast", 10)],
                vec![published("a", "fast", Some("n2"), 10)],
                vec![Action::Create(want("fast", 10)), delete("a")],
            ),
            (
                "an object without a node is replaced",
                vec![want("fast", 10)],
                vec![published("a", "fast", None, 10)],
                vec![Action::Create(want("fast", 10)), delete("a")],
            ),
            (
                "each class on its own",
                vec![want("fast", 10), want("slow", 5)],
                vec![
                    published("a", "slow", Some("n1"), 5),
                    published("b", "old", Some("n1"), 1),
                ],
                vec![Action::Create(want("fast", 10)), delete("b")],
            ),
        ];
        for (what, wanted, existing, expected) in cases {
            assert_eq!(plan("n1", &wanted, &existing), expected, "{what}");
        }
    }
}
