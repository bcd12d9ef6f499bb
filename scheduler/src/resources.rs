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
}

/// The free part of the allocation in fresh-process-per-task mode.
///
/// GPUs are counted by name: on the local backend the names are device ids
/// that become the worker's `CUDA_VISIBLE_DEVICES`; where srun or flux pick
/// the devices they are tokens that only count the allocation's GPUs.
#[derive(Clone, Debug)]
pub struct Capacity {
    cpus_total: u32,
    cpus_used: u32,
    max_workers: Option<u32>,
    workers: u32,
    gpus_total: u32,
    gpus_free: Vec<String>,
}

impl Capacity {
    pub fn new(cpus_total: u32, max_workers: Option<u32>, gpus: Vec<String>) -> Capacity {
        Capacity {
            cpus_total,
            cpus_used: 0,
            max_workers,
            workers: 0,
            gpus_total: u32::try_from(gpus.len()).unwrap_or(u32::MAX),
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
            && self.gpus_free.len() >= request.gpus() as usize
    }

    /// Could this request ever run here, even on an empty allocation?
    pub fn can_ever_fit(&self, request: &ResourceRequest) -> bool {
        self.never_fits(request).is_none()
    }

    /// Why `request` could never run here, even on an empty allocation: a
    /// task like that would wait forever, so it is refused instead.
    pub fn never_fits(&self, request: &ResourceRequest) -> Option<String> {
        if self.cpus_for(request) > self.cpus_total {
            return Some(format!(
                "{} cores x {} threads_per_core can never fit in {} CPUs",
                request.cores, request.threads_per_core, self.cpus_total
            ));
        }
        if request.gpus() > self.gpus_total {
            return Some(format!(
                "{} GPU(s) requested but the allocation has {}",
                request.gpus(),
                self.gpus_total
            ));
        }
        None
    }

    /// Take what `request` needs; returns the GPU devices handed to it.
    pub fn take(&mut self, request: &ResourceRequest) -> Vec<String> {
        self.cpus_used += self.cpus_for(request);
        self.workers += 1;
        let n = request.gpus() as usize;
        self.gpus_free.drain(..n).collect()
    }

    pub fn give_back(&mut self, request: &ResourceRequest, gpus: Vec<String>) {
        self.cpus_used -= self.cpus_for(request);
        self.workers -= 1;
        self.return_gpus(gpus);
    }

    /// Devices for a block-allocated worker, which holds them for its life.
    pub fn take_gpus(&mut self, n: u32) -> Vec<String> {
        let n = (n as usize).min(self.gpus_free.len());
        self.gpus_free.drain(..n).collect()
    }

    pub fn return_gpus(&mut self, gpus: Vec<String>) {
        self.gpus_free.extend(gpus);
        self.gpus_free.sort();
    }

    pub fn cpus_total(&self) -> u32 {
        self.cpus_total
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

    #[test]
    fn cpus_count_threads_and_gpus_are_distinct_devices() {
        let mut cap = Capacity::new(4, None, vec!["0".into(), "1".into()]);
        assert!(cap.fits(&req(2, 2, 0)));
        assert!(!cap.fits(&req(3, 2, 0)));
        let a = cap.take(&req(1, 1, 1));
        let b = cap.take(&req(1, 1, 1));
        assert_eq!(
            (a.clone(), b.clone()),
            (vec!["0".to_string()], vec!["1".to_string()])
        );
        assert!(!cap.fits(&req(1, 1, 1)), "no GPU left");
        cap.give_back(&req(1, 1, 1), a);
        assert!(cap.fits(&req(1, 1, 1)));
    }

    #[test]
    fn max_workers_limits_concurrent_workers() {
        let mut cap = Capacity::new(8, Some(1), vec![]);
        cap.take(&req(1, 1, 0));
        assert!(!cap.fits(&req(1, 1, 0)));
    }

    #[test]
    fn oversubscribe_fits_a_request_larger_than_the_allocation() {
        let mut over = req(4, 1, 0);
        over.oversubscribe = true;
        let cap = Capacity::new(2, None, vec![]);
        assert!(cap.can_ever_fit(&over) && cap.fits(&over));
        assert!(!cap.can_ever_fit(&req(4, 1, 0)));
    }

    #[test]
    fn more_gpus_than_the_allocation_holds_can_never_fit_and_says_why() {
        let cap = Capacity::new(4, None, vec!["0".into(), "1".into()]);
        assert!(cap.can_ever_fit(&req(2, 1, 1)));
        let why = cap.never_fits(&req(1, 1, 3)).unwrap();
        assert_eq!(why, "3 GPU(s) requested but the allocation has 2");
        let none = Capacity::new(4, None, vec![]);
        assert!(!none.can_ever_fit(&req(1, 1, 1)));
        assert!(none.can_ever_fit(&req(1, 1, 0)));
    }

    #[test]
    fn counting_tokens_need_not_be_distinct() {
        // srun and flux pick the devices: pmp only counts the allocation's GPUs.
        let mut cap = Capacity::new(4, None, vec!["srun".into(); 2]);
        let a = cap.take(&req(1, 1, 1));
        let _b = cap.take(&req(1, 1, 1));
        assert!(!cap.fits(&req(1, 1, 1)), "both GPUs are taken");
        cap.give_back(&req(1, 1, 1), a);
        assert!(cap.fits(&req(1, 1, 1)));
        assert!(!cap.fits(&req(1, 1, 2)));
    }
}
