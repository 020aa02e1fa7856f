import Simulators

/// The shared local cluster (started once per test process, or taken from `SHOAL_TEST_KUBE_DIR`).
typealias TestCluster = LocalCluster
