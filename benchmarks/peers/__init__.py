"""The systems raftio is compared with: PySyncObj peer processes and etcd members."""
