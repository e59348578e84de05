"""The Lab 2 scenario suite: MIT 6.5840 (2023) src/raft/test_test.go on asyncio."""
