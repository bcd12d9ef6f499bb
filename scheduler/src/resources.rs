//! What a task or worker asks for, and the accounting of what is free.

/// Resources of one worker process (group of ranks), as the user writes them
/// in `resource_dict` or on the Executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRequest {
    pub cores: u32,
    pub threads_per_core: u32,
    pub gpus_per_core: u32,
    pub oversubscribe: bool,
    pub cwd: Option<String>,
    pub extra_args: Vec<String>,
}

impl Default for ResourceRequest {
    fn default() -> Self {
        ResourceRequest {
            cores: 1,
            threads_per_core: 1,
            gpus_per_core: 0,
            oversubscribe: false,
            cwd: None,
            extra_args: Vec::new(),
        }
    }
}

impl ResourceRequest {
    /// CPUs taken from the allocation: one per thread of every rank.
    pub fn cpus(&self) -> u32 {
        self.cores * self.threads_per_core
    }

    pub fn gpus(&self) -> u32 {
        self.cores * self.gpus_per_core
    }

    /// The first setting, by its `resource_dict` key, in which `other`
    /// asks for something else than this; None when they are the same.
    pub fn first_difference(&self, other: &ResourceRequest) -> Option<&'static str> {
        [
            ("cores", self.cores != other.cores),
            (
                "threads_per_core",
                self.threads_per_core != other.threads_per_core,
            ),
            ("gpus_per_core", self.gpus_per_core != other.gpus_per_core),
            ("oversubscribe", self.oversubscribe != other.oversubscribe),
            ("cwd", self.cwd != other.cwd),
            (
                "command_line_argument_lst",
                self.extra_args != other.extra_args,
            ),
        ]
        .into_iter()
        .find_map(|(key, differs)| differs.then_some(key))
    }
}

/// The first control character (a newline, a tab, ...) in `text`, if any.
/// A value that reaches a job script or a command line holds none: a
/// newline in an `#SBATCH` line starts a line of its own, which the shell
/// runs, and ends the options there.
pub fn control_character(text: &str) -> Option<char> {
    text.chars().find(|c| c.is_control())
}

/// GPUs: of the whole allocation, its free part, or one worker's share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gpus {
    /// Device ids pmp hands out itself, as the worker's
    /// `CUDA_VISIBLE_DEVICES` (the local backend).
    Devices(Vec<String>),
    /// srun or flux pick the devices and set the variable; pmp only counts
    /// the allocation's GPUs so that no more run at once than it holds.
    Counted(u32),
}

impl Gpus {
    pub fn count(&self) -> u32 {
        match self {
            Gpus::Devices(ids) => u32::try_from(ids.len()).unwrap_or(u32::MAX),
            Gpus::Counted(n) => *n,
        }
    }

    /// The device ids a worker is to see; none where the launcher picks them.
    pub fn devices(&self) -> &[String] {
        match self {
            Gpus::Devices(ids) => ids,
            Gpus::Counted(_) => &[],
        }
    }

    /// Take `n` (or as many as there are) out of these.
    fn take(&mut self, n: u32) -> Gpus {
        match self {
            Gpus::Devices(free) => {
                let n = (n as usize).min(free.len());
                Gpus::Devices(free.drain(..n).collect())
            }
            Gpus::Counted(free) => {
                let n = n.min(*free);
                *free -= n;
                Gpus::Counted(n)
            }
        }
    }

    /// Return what `take` handed out.
    fn put_back(&mut self, taken: Gpus) {
        match (self, taken) {
            (Gpus::Devices(free), Gpus::Devices(ids)) => {
                free.extend(ids);
                free.sort();
            }
            (Gpus::Counted(free), Gpus::Counted(n)) => *free += n,
            (free, taken) => {
                unreachable!("{taken:?} returned to {free:?}: GPUs go back where they came from")
            }
        }
    }
}

/// Why a request can never run in an allocation, typed so that the client
/// can say it in the user's own terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeverFits {
    /// `cores` x `threads_per_core` CPUs are more than the allocation's `cpus`.
    Cpus {
        cores: u32,
        threads_per_core: u32,
        cpus: u32,
    },
    Gpus {
        requested: u32,
        available: u32,
    },
    /// A block allocation of `workers` workers of `cpus_each` CPUs holds
    /// them all at once, which is more than the allocation's `cpus`.
    Pool {
        workers: u32,
        cpus_each: u32,
        cpus: u32,
    },
}

impl std::fmt::Display for NeverFits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NeverFits::Cpus {
                cores,
                threads_per_core,
                cpus,
            } => write!(
                f,
                "{cores} cores x {threads_per_core} threads_per_core can never fit in {cpus} CPUs"
            ),
            NeverFits::Gpus {
                requested,
                available,
            } => write!(
                f,
                "{requested} GPU(s) requested but the allocation has {available}"
            ),
            NeverFits::Pool {
                workers,
                cpus_each,
                cpus,
            } => write!(
                f,
                "{workers} workers of {cpus_each} CPUs each can never fit in {cpus} CPUs"
            ),
        }
    }
}

/// The free part of the allocation in fresh-process-per-task mode.
#[derive(Clone, Debug)]
pub struct Capacity {
    cpus_total: u32,
    cpus_used: u32,
    max_workers: Option<u32>,
    workers: u32,
    gpus_total: u32,
    gpus_free: Gpus,
}

impl Capacity {
    pub fn new(cpus_total: u32, max_workers: Option<u32>, gpus: Gpus) -> Capacity {
        Capacity {
            cpus_total,
            cpus_used: 0,
            max_workers,
            workers: 0,
            gpus_total: gpus.count(),
            gpus_free: gpus,
        }
    }

    /// CPUs a request takes. Oversubscription may exceed the allocation, but it
    /// still occupies all of it while it runs.
    fn cpus_for(&self, request: &ResourceRequest) -> u32 {
        if request.oversubscribe {
            request.cpus().min(self.cpus_total)
        } else {
            request.cpus()
        }
    }

    pub fn fits(&self, request: &ResourceRequest) -> bool {
        let workers_ok = self.max_workers.is_none_or(|max| self.workers < max);
        workers_ok
            && self.cpus_used + self.cpus_for(request) <= self.cpus_total
            && self.gpus_free.count() >= request.gpus()
    }

    /// Why `request` could never run here, even on an empty allocation: a
    /// task like that would wait forever, so it is refused instead.
    pub fn never_fits(&self, request: &ResourceRequest) -> Option<NeverFits> {
        self.pool_never_fits(request, 1)
    }

    /// The same for a block allocation of `workers` workers like `request`:
    /// each must fit on its own, and they hold their CPUs and GPUs all at
    /// once (a worker the allocation has no GPUs left for would get none).
    /// Only oversubscribed workers may share CPUs.
    pub fn pool_never_fits(&self, request: &ResourceRequest, workers: u32) -> Option<NeverFits> {
        if self.cpus_for(request) > self.cpus_total {
            return Some(NeverFits::Cpus {
                cores: request.cores,
                threads_per_core: request.threads_per_core,
                cpus: self.cpus_total,
            });
        }
        let cpus = u64::from(request.cpus()) * u64::from(workers);
        if !request.oversubscribe && cpus > u64::from(self.cpus_total) {
            return Some(NeverFits::Pool {
                workers,
                cpus_each: request.cpus(),
                cpus: self.cpus_total,
            });
        }
        let gpus = request.gpus().saturating_mul(workers);
        if gpus > self.gpus_total {
            return Some(NeverFits::Gpus {
                requested: gpus,
                available: self.gpus_total,
            });
        }
        None
    }

    /// Take what `request` needs (it `fits`); returns the GPUs handed to it.
    pub fn take(&mut self, request: &ResourceRequest) -> Gpus {
        self.cpus_used += self.cpus_for(request);
        self.workers += 1;
        self.gpus_free.take(request.gpus())
    }

    pub fn give_back(&mut self, request: &ResourceRequest, gpus: Gpus) {
        self.cpus_used -= self.cpus_for(request);
        self.workers -= 1;
        self.return_gpus(gpus);
    }

    /// GPUs for a block-allocated worker, which holds them for its life.
    pub fn take_gpus(&mut self, n: u32) -> Gpus {
        self.gpus_free.take(n)
    }

    pub fn return_gpus(&mut self, gpus: Gpus) {
        self.gpus_free.put_back(gpus);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cores: u32, threads: u32, gpus: u32) -> ResourceRequest {
        ResourceRequest {
            cores,
            threads_per_core: threads,
            gpus_per_core: gpus,
            ..Default::default()
        }
    }

    fn devices(ids: &[&str]) -> Gpus {
        Gpus::Devices(ids.iter().map(|id| id.to_string()).collect())
    }

    #[test]
    fn a_block_worker_takes_what_is_left_and_returns_it() {
        let mut cap = Capacity::new(4, None, Gpus::Counted(3));
        let a = cap.take_gpus(2);
        let b = cap.take_gpus(2);
        assert_eq!((&a, &b), (&Gpus::Counted(2), &Gpus::Counted(1)));
        cap.return_gpus(a);
        cap.return_gpus(b);
        assert!(cap.fits(&req(1, 1, 3)));
    }

    #[test]
    fn cpus_count_threads_and_gpus_are_distinct_devices() {
        let mut cap = Capacity::new(4, None, devices(&["0", "1"]));
        assert!(cap.fits(&req(2, 2, 0)));
        assert!(!cap.fits(&req(3, 2, 0)));
        let a = cap.take(&req(1, 1, 1));
        let b = cap.take(&req(1, 1, 1));
        assert_eq!((a.clone(), b), (devices(&["0"]), devices(&["1"])));
        assert!(!cap.fits(&req(1, 1, 1)), "no GPU left");
        cap.give_back(&req(1, 1, 1), a);
        assert!(cap.fits(&req(1, 1, 1)));
    }

    #[test]
    fn max_workers_limits_concurrent_workers() {
        let mut cap = Capacity::new(8, Some(1), Gpus::Counted(0));
        cap.take(&req(1, 1, 0));
        assert!(!cap.fits(&req(1, 1, 0)));
    }

    #[test]
    fn oversubscribe_fits_a_request_larger_than_the_allocation() {
        let mut over = req(4, 1, 0);
        over.oversubscribe = true;
        let cap = Capacity::new(2, None, Gpus::Counted(0));
        assert!(cap.never_fits(&over).is_none() && cap.fits(&over));
        let why = cap.never_fits(&req(4, 1, 0)).unwrap();
        assert_eq!(
            why,
            NeverFits::Cpus {
                cores: 4,
                threads_per_core: 1,
                cpus: 2
            }
        );
        assert_eq!(
            why.to_string(),
            "4 cores x 1 threads_per_core can never fit in 2 CPUs"
        );
    }

    #[test]
    fn more_gpus_than_the_allocation_holds_can_never_fit_and_says_why() {
        let cap = Capacity::new(4, None, devices(&["0", "1"]));
        assert!(cap.never_fits(&req(2, 1, 1)).is_none());
        assert!(cap.pool_never_fits(&req(1, 1, 1), 2).is_none());
        assert_eq!(
            cap.pool_never_fits(&req(1, 1, 1), 3),
            Some(NeverFits::Gpus {
                requested: 3,
                available: 2
            })
        );
        let why = cap.never_fits(&req(1, 1, 3)).unwrap();
        assert_eq!(
            why,
            NeverFits::Gpus {
                requested: 3,
                available: 2
            }
        );
        assert_eq!(
            why.to_string(),
            "3 GPU(s) requested but the allocation has 2"
        );
        let none = Capacity::new(4, None, Gpus::Devices(vec![]));
        assert!(none.never_fits(&req(1, 1, 1)).is_some());
        assert!(none.never_fits(&req(1, 1, 0)).is_none());
    }

    #[test]
    fn a_pool_holds_the_cpus_of_all_its_workers_unless_oversubscribed() {
        let cap = Capacity::new(1, None, Gpus::Counted(0));
        let why = cap.pool_never_fits(&req(1, 1, 0), 2).unwrap();
        assert_eq!(
            why,
            NeverFits::Pool {
                workers: 2,
                cpus_each: 1,
                cpus: 1
            }
        );
        assert_eq!(
            why.to_string(),
            "2 workers of 1 CPUs each can never fit in 1 CPUs"
        );
        assert!(cap.pool_never_fits(&req(1, 1, 0), 1).is_none());
        let mut over = req(1, 1, 0);
        over.oversubscribe = true;
        assert!(cap.pool_never_fits(&over, 2).is_none());
    }

    #[test]
    fn every_setting_is_a_difference_named_by_its_key() {
        let pool = req(1, 1, 0);
        assert_eq!(pool.first_difference(&pool.clone()), None);
        type Change = fn(&mut ResourceRequest);
        let changed: [(&str, Change); 6] = [
            ("cores", |r| r.cores = 2),
            ("threads_per_core", |r| r.threads_per_core = 2),
            ("gpus_per_core", |r| r.gpus_per_core = 1),
            ("oversubscribe", |r| r.oversubscribe = true),
            ("cwd", |r| r.cwd = Some("/elsewhere".into())),
            ("command_line_argument_lst", |r| {
                r.extra_args = vec!["-v".into()]
            }),
        ];
        for (key, change) in changed {
            let mut other = pool.clone();
            change(&mut other);
            assert_eq!(pool.first_difference(&other), Some(key));
        }
    }

    #[test]
    fn control_characters_are_found_anywhere_in_a_value() {
        assert_eq!(control_character("debug"), None);
        assert_eq!(control_character("debug\n#SBATCH"), Some('\n'));
        assert_eq!(control_character("a\tb"), Some('\t'));
        assert_eq!(control_character("caf\u{e9}"), None);
    }

    #[test]
    fn counted_gpus_are_handed_out_by_number_only() {
        // srun and flux pick the devices: pmp only counts the allocation's GPUs.
        let mut cap = Capacity::new(4, None, Gpus::Counted(2));
        let a = cap.take(&req(1, 1, 1));
        assert_eq!((a.count(), a.devices()), (1, &[][..]));
        let _b = cap.take(&req(1, 1, 1));
        assert!(!cap.fits(&req(1, 1, 1)), "both GPUs are taken");
        cap.give_back(&req(1, 1, 1), a);
        assert!(cap.fits(&req(1, 1, 1)));
        assert!(!cap.fits(&req(1, 1, 2)));
    }
}
