"""The sandbox behind `make demo` and the e2e tier: a real control plane in network namespaces.

cluster.py builds it (etcd, three masters with sshd + kube-apiserver, kube-controller-manager) from the
lab's parts (lab/: namespaces, sshd, the supervisor as each master's service manager, certificates, the
control-plane command lines); podrunner.py runs metrics-server from its Deployment, kubelets.py emulates
nodes; `python -m sandbox up|down|status|env` is the command line. Its own tests: sandbox/tests (`make lab`).
"""
