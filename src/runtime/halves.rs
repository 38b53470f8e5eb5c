//! Two futures run as one task that still wake apart: each half is polled only when its
//! own waker was woken. A connection's reader and writer run this way (see
//! `server::connection`): one task's header, task-locals and executor slot instead of
//! two, and a wake of one half never polls the other (a spurious poll of a TLS reader
//! would cost a `read` that can only say "would block").
//!
//! What the halves' wakers share ([`Wakes`]) owns nothing but the task's waker: a waker
//! a half leaves behind (in a socket's readiness slot, say) must not keep the half's
//! state alive, or a socket would keep itself open through its own waker.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use futures::future::{maybe_done, MaybeDone};
use futures::task::AtomicWaker;

/// Runs `first` and `second` to completion in the task that polls the result, and gives
/// both outputs. Each half is polled once at the start and then only after its own
/// waker was woken. `wakes` is what their wakers share (the caller may keep a handle, to
/// wake the first half from outside: [`Wakes::wake_first`]); it must serve no other join.
pub fn join_halves<A: Future, B: Future>(
    first: A,
    second: B,
    wakes: Arc<Wakes>,
) -> JoinHalves<A, B> {
    wakes.due.store(FIRST | SECOND, Ordering::Release);
    JoinHalves {
        first: maybe_done(first),
        second: maybe_done(second),
        wakes,
    }
}

/// Which halves were woken since they were last polled: bits of [`Wakes::due`].
const FIRST: u8 = 1;
const SECOND: u8 = 2;

/// What the halves' wakers share with the task: 32 bytes, in an `Arc` of its own.
#[derive(Default)]
pub struct Wakes {
    /// Halves woken and not yet polled again ([`FIRST`], [`SECOND`]).
    due: AtomicU8,
    /// The task that carries both halves, woken whenever either is.
    task: AtomicWaker,
}

impl Wakes {
    /// Wakes the first half as its own waker would: for whoever must make it look again
    /// without holding a waker it registered.
    pub fn wake_first(&self) {
        self.wake(FIRST);
    }

    fn wake(&self, half: u8) {
        self.due.fetch_or(half, Ordering::AcqRel);
        self.task.wake();
    }
}

pin_project_lite::pin_project! {
    /// The future of [`join_halves`].
    pub struct JoinHalves<A: Future, B: Future> {
        #[pin]
        first: MaybeDone<A>,
        #[pin]
        second: MaybeDone<B>,
        // Shared with every waker handed to a half.
        wakes: Arc<Wakes>,
    }
}

impl<A: Future, B: Future> Future for JoinHalves<A, B> {
    type Output = (A::Output, B::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let wakes = &**this.wakes;
        // Registered before the bits are taken: a wake after the swap wakes the task again.
        wakes.task.register(cx.waker());
        let due = wakes.due.swap(0, Ordering::AcqRel);
        if due & FIRST != 0 {
            let waker = half_waker::<FIRST>(this.wakes);
            let _ = this.first.as_mut().poll(&mut Context::from_waker(&waker));
        }
        if due & SECOND != 0 {
            let waker = half_waker::<SECOND>(this.wakes);
            let _ = this.second.as_mut().poll(&mut Context::from_waker(&waker));
        }
        if is_done(&this.first) && is_done(&this.second) {
            // Both are `Done`, so each gives its output exactly once.
            let first = this.first.take_output().expect("first half is done");
            let second = this.second.take_output().expect("second half is done");
            return Poll::Ready((first, second));
        }
        Poll::Pending
    }
}

fn is_done<F: Future>(half: &MaybeDone<F>) -> bool {
    matches!(half, MaybeDone::Done(_))
}

/// A waker for one half, borrowed for one poll: it holds no count of its own (the
/// join's `Arc` outlives the poll); a clone a half keeps takes one.
fn half_waker<const HALF: u8>(wakes: &Arc<Wakes>) -> ManuallyDrop<Waker> {
    let data = Arc::as_ptr(wakes).cast::<()>();
    // SAFETY: `data` points to a live `Wakes` for the whole poll, and the vtable's
    // functions keep the `Arc` count right for every clone (see `Half`).
    ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(data, &Half::<HALF>::VTABLE)) })
}

/// The waker functions of one half; `HALF` is its bit in [`Wakes::due`].
struct Half<const HALF: u8>;

impl<const HALF: u8> Half<HALF> {
    const VTABLE: RawWakerVTable =
        RawWakerVTable::new(Self::clone, Self::wake, Self::wake_by_ref, Self::drop);

    /// SAFETY (all four): `data` came from `Arc::as_ptr` of an `Arc<Wakes>` that is
    /// alive, either borrowed for a poll (`half_waker`) or counted by a clone.
    unsafe fn clone(data: *const ()) -> RawWaker {
        Arc::increment_strong_count(data.cast::<Wakes>());
        RawWaker::new(data, &Self::VTABLE)
    }

    unsafe fn wake(data: *const ()) {
        let wakes = Arc::from_raw(data.cast::<Wakes>());
        wakes.wake(HALF);
    }

    unsafe fn wake_by_ref(data: *const ()) {
        (*data.cast::<Wakes>()).wake(HALF);
    }

    unsafe fn drop(data: *const ()) {
        drop(Arc::from_raw(data.cast::<Wakes>()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A future that counts its polls and is ready once `open` is set; it keeps the
    /// latest waker so a test can wake it.
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: Arc<std::sync::atomic::AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Gate {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let polls = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            match self.open.load(Ordering::SeqCst) {
                true => Poll::Ready(polls),
                false => Poll::Pending,
            }
        }
    }

    fn gate() -> (Gate, Arc<AtomicUsize>, Arc<std::sync::atomic::AtomicBool>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker = Arc::new(std::sync::Mutex::new(None));
        let g = Gate {
            polls: polls.clone(),
            open: open.clone(),
            waker,
        };
        (g, polls, open)
    }

    fn wake(g: &Arc<std::sync::Mutex<Option<Waker>>>) {
        g.lock().unwrap().take().expect("a waker was kept").wake();
    }

    fn home() -> Arc<Wakes> {
        Arc::new(Wakes::default())
    }

    #[test]
    fn a_wake_polls_only_the_half_it_belongs_to() {
        let (a, a_polls, a_open) = gate();
        let (b, b_polls, b_open) = gate();
        let (a_waker, b_waker) = (a.waker.clone(), b.waker.clone());
        let task_wakes = Arc::new(AtomicUsize::new(0));
        let task = futures::task::waker(Arc::new(Counter(task_wakes.clone())));
        let mut cx = Context::from_waker(&task);
        let mut joined = Box::pin(join_halves(a, b, home()));

        assert!(joined.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            (
                a_polls.load(Ordering::SeqCst),
                b_polls.load(Ordering::SeqCst)
            ),
            (1, 1)
        );

        // Polled with nothing woken: neither half is polled.
        assert!(joined.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            (
                a_polls.load(Ordering::SeqCst),
                b_polls.load(Ordering::SeqCst)
            ),
            (1, 1)
        );

        // The second half's waker wakes the task and, on the next poll, only that half.
        wake(&b_waker);
        assert_eq!(task_wakes.load(Ordering::SeqCst), 1);
        assert!(joined.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            (
                a_polls.load(Ordering::SeqCst),
                b_polls.load(Ordering::SeqCst)
            ),
            (1, 2)
        );

        b_open.store(true, Ordering::SeqCst);
        wake(&b_waker);
        assert!(joined.as_mut().poll(&mut cx).is_pending());
        assert_eq!(b_polls.load(Ordering::SeqCst), 3);

        a_open.store(true, Ordering::SeqCst);
        wake(&a_waker);
        assert_eq!(joined.as_mut().poll(&mut cx), Poll::Ready((2, 3)));
        assert_eq!(a_polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn wakers_kept_past_the_join_stay_valid() {
        let (a, _, _) = gate();
        let kept = a.waker.clone();
        let mut joined = Box::pin(join_halves(a, async { 7 }, home()));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert!(joined.as_mut().poll(&mut cx).is_pending());
        drop(joined);
        // The half's clone holds the shared state alive: waking it is harmless.
        wake(&kept);
    }

    #[test]
    fn runs_on_the_runtime() {
        let out = crate::runtime::block_on(join_halves(
            async {
                crate::runtime::sleep(std::time::Duration::from_millis(5)).await;
                1
            },
            async {
                futures_lite::future::yield_now().await;
                2
            },
            home(),
        ));
        assert_eq!(out, (1, 2));
    }

    struct Counter(Arc<AtomicUsize>);
    impl futures::task::ArcWake for Counter {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}
