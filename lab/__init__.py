"""The lab: scaffolding that stands in for masters and clusters, apart from the product (components/,
policy/), as Kubernetes keeps its own in hack/. The host tier (tests/hosts), the engine tier
(tests/e2e), the sandbox behind `make demo` (sandbox/) and the benchmarks build on it.

    proc.py        running commands, waiting, processes (the one sh / wait_for of every lab)
    netns.py       network namespaces, veths, bridges, and the private mount namespace of a host
    sshd.py        Debian's sshd inside a host's namespaces (host key, config, start)
    supervisor.py  a host's service manager (what systemd or the kubelet does) + its shims in shims/
    standin.py     the stand-in kube-apiserver of the host tier (it checks flags and serves /readyz)
    apiserver.py   real etcd / kube-apiserver / kube-controller-manager processes and their kubeconfig
    hosts.py       the host tier's SSH test hosts (Lab, Host)
    sampler.py     availability sampling (a probe per target every N ms: failures, longest gap)
Its own tests are in lab/tests (`make lab`); none of it is shipped.
"""
