"""The sandbox behind `make demo` and the e2e tier: a real control plane in network namespaces.

cluster.py builds it (etcd, three masters with sshd + kube-apiserver, kube-controller-manager), pki.py makes
its certificates, supervisor.py is each master's service manager, podrunner.py runs metrics-server from its
Deployment, kubelets.py emulates nodes; `python -m sandbox up|down|status|env` is the command line.
"""
