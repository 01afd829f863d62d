//! `Auto` falls back to epoll where io_uring is blocked, as Docker's default seccomp profile
//! does: a child process installs a seccomp filter refusing the io_uring system calls with
//! EPERM, then starts a worker and proves it serves traffic.
#![allow(unsafe_code)]

use fastpath::udp::{BackendChoice, Io, Worker, WorkerConfig};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

const CHILD: &str = "FASTPATH_SECCOMP_CHILD";

/// Refuses io_uring_setup, io_uring_enter and io_uring_register with EPERM from now on.
fn block_io_uring() {
    let instruction = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let load_nr = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jump_eq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let program = [
        instruction(load_nr, 0, 0, 0),   // seccomp_data.nr
        instruction(jump_eq, 3, 0, 425), // io_uring_setup
        instruction(jump_eq, 2, 0, 426), // io_uring_enter
        instruction(jump_eq, 1, 0, 427), // io_uring_register
        instruction(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
        instruction(ret, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ];
    let filter = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `filter` points at `program`, alive during the call (the
    // kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &filter as *const libc::sock_fprog
            ),
            0
        );
    }
}

fn child() {
    block_io_uring();
    let config = WorkerConfig {
        name: "fallback".into(),
        backend: BackendChoice::Auto,
        core: None,
        buffer_size: 2048,
        buffers: 64,
        tick: None,
    };
    let echo =
        |out: &mut Io, socket: usize, from: SocketAddr, bytes: &[u8]| out.send(socket, from, bytes);
    let worker = Worker::spawn(
        config.clone(),
        vec![UdpSocket::bind("127.0.0.1:0").unwrap()],
        echo,
    )
    .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"ping", worker.local_addrs()[0]).unwrap();
    let mut buffer = [0u8; 16];
    let (n, _) = client.recv_from(&mut buffer).unwrap();
    println!(
        "backend={} echoed={} reason={:?}",
        worker.backend(),
        String::from_utf8_lossy(&buffer[..n]),
        worker.fallback_reason()
    );
    let required = WorkerConfig {
        backend: BackendChoice::IoUring,
        ..config
    };
    let refused = Worker::spawn(
        required,
        vec![UdpSocket::bind("127.0.0.1:0").unwrap()],
        echo,
    );
    println!(
        "required={}",
        refused.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

#[test]
fn auto_falls_back_to_epoll_where_io_uring_is_blocked() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "auto_falls_back_to_epoll_where_io_uring_is_blocked",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("backend=epoll echoed=ping"), "{stdout}");
    assert!(
        stdout.contains("Operation not permitted"),
        "the reason is given: {stdout}"
    );
    assert!(
        stdout.contains("required=io_uring is not available") && stdout.contains("seccomp"),
        "{stdout}"
    );
}
