//! The step planner: which sequences get how many tokens in the next batch.
//!
//! Pure and backend-agnostic. Every decoding sequence gets its one token first, so running
//! streams never stall; the rest of the token budget goes to prompt chunks in admission order
//! (chunked prefill: a long prompt is spread over several steps).

/// What a sequence wants from the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// One token: the last sampled one.
    Decode,
    /// Prompt tokens not yet evaluated.
    Prefill {
        /// How many prompt tokens are left.
        remaining: usize,
    },
}

/// One sequence's share of the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Index into the `demands` slice given to [`Scheduler::plan`].
    pub index: usize,
    /// Number of tokens to evaluate for it.
    pub tokens: usize,
}

/// Plans steps within a token budget.
#[derive(Debug, Clone, Copy)]
pub struct Scheduler {
    budget: usize,
}

impl Scheduler {
    /// A scheduler whose batches hold at most `budget` tokens (at least 1).
    pub fn new(budget: usize) -> Self {
        Scheduler {
            budget: budget.max(1),
        }
    }

    /// Plans one step for `demands`, listed in admission order.
    ///
    /// Decodes come first, in order; when there are more decoders than budget the earliest
    /// admitted are served (the engine's configuration keeps budget >= parallel, so this only
    /// guards against misuse). Prefill chunks follow in admission order.
    pub fn plan(&self, demands: &[Demand]) -> Vec<Work> {
        let mut left = self.budget;
        let mut plan = Vec::with_capacity(demands.len());
        for (index, demand) in demands.iter().enumerate() {
            if left == 0 {
                break;
            }
            if *demand == Demand::Decode {
                plan.push(Work { index, tokens: 1 });
                left -= 1;
            }
        }
        for (index, demand) in demands.iter().enumerate() {
            if left == 0 {
                break;
            }
            if let Demand::Prefill { remaining } = *demand {
                let tokens = remaining.min(left);
                if tokens > 0 {
                    plan.push(Work { index, tokens });
                    left -= tokens;
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(plan: &[Work]) -> usize {
        plan.iter().map(|w| w.tokens).sum()
    }

    #[test]
    fn every_decoder_gets_one_token_before_any_prefill() {
        let demands = [
            Demand::Prefill { remaining: 1000 },
            Demand::Decode,
            Demand::Decode,
        ];
        let plan = Scheduler::new(64).plan(&demands);
        assert_eq!(
            plan,
            vec![
                Work {
                    index: 1,
                    tokens: 1
                },
                Work {
                    index: 2,
                    tokens: 1
                },
                Work {
                    index: 0,
                    tokens: 62
                },
            ]
        );
    }

    #[test]
    fn long_prompt_is_chunked_over_steps() {
        let scheduler = Scheduler::new(100);
        let mut remaining = 250;
        let mut steps = 0;
        while remaining > 0 {
            let plan = scheduler.plan(&[Demand::Prefill { remaining }, Demand::Decode]);
            assert_eq!(
                plan[0],
                Work {
                    index: 1,
                    tokens: 1
                },
                "the stream keeps decoding"
            );
            assert!(total(&plan) <= 100);
            remaining -= plan[1].tokens;
            steps += 1;
        }
        assert_eq!(steps, 3);
    }

    #[test]
    fn prefills_share_the_rest_in_admission_order() {
        let demands = [
            Demand::Prefill { remaining: 30 },
            Demand::Prefill { remaining: 50 },
            Demand::Prefill { remaining: 50 },
        ];
        let plan = Scheduler::new(64).plan(&demands);
        assert_eq!(
            plan,
            vec![
                Work {
                    index: 0,
                    tokens: 30
                },
                Work {
                    index: 1,
                    tokens: 34
                }
            ]
        );
    }

    #[test]
    fn budget_is_never_exceeded_even_with_too_many_decoders() {
        let demands = vec![Demand::Decode; 10];
        let plan = Scheduler::new(4).plan(&demands);
        assert_eq!(total(&plan), 4);
        assert_eq!(
            plan.iter().map(|w| w.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn empty_demands_plan_nothing() {
        assert!(Scheduler::new(8).plan(&[]).is_empty());
        assert!(
            Scheduler::new(8)
                .plan(&[Demand::Prefill { remaining: 0 }])
                .is_empty()
        );
    }
}
