//! What a misuse breaks, which public entry points it can reach, and the
//! error each must answer with.

use proptest::prelude::*;
use vivit::Error;

/// A public entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `vivit::record` (with `vivit::loss`) itself.
    Record,
    Eigvalsh,
    Eigh,
    DirectionalDerivatives,
    /// `DirectionalDampedNewtonComputation` with the complement step.
    DampedNewtonStep,
    /// `vivit::backward` with all four computations.
    Backward,
    StepRecorded,
    /// `Optimizer::step(&grads)`.
    Step,
    /// `Optimizer::backward_step(&loss)`.
    BackwardStep,
    StepWithModel,
}

use Entry::*;

const ALL: [Entry; 9] = [
    Eigvalsh,
    Eigh,
    DirectionalDerivatives,
    DampedNewtonStep,
    Backward,
    StepRecorded,
    Step,
    BackwardStep,
    StepWithModel,
];
/// Entries that pick directions with a criterion.
const DIRECTIONS: [Entry; 8] = [
    Eigh,
    DirectionalDerivatives,
    DampedNewtonStep,
    Backward,
    StepRecorded,
    Step,
    BackwardStep,
    StepWithModel,
];
/// Entries that need positive kept eigenvalues and per-sample gradients.
const DIRECTIONAL: [Entry; 7] = [
    DirectionalDerivatives,
    DampedNewtonStep,
    Backward,
    StepRecorded,
    Step,
    BackwardStep,
    StepWithModel,
];
/// The computations among [`DIRECTIONAL`]: the optimizer drops directions
/// of non-positive curvature that a criterion keeps instead of refusing them.
const COMPUTED_DIRECTIONAL: [Entry; 3] = [DirectionalDerivatives, DampedNewtonStep, Backward];
/// Entries that damp (all with the complement step).
const DAMPED: [Entry; 6] = [
    DampedNewtonStep,
    Backward,
    StepRecorded,
    Step,
    BackwardStep,
    StepWithModel,
];
const OPTIMIZER: [Entry; 4] = [StepRecorded, Step, BackwardStep, StepWithModel];
/// Entries that take a Levenberg–Marquardt damping (the optimizer's only with
/// the loss after the step).
const ADAPTIVE: [Entry; 3] = [DampedNewtonStep, Backward, StepWithModel];
/// Optimizer entries that do not evaluate the loss after the step.
const WITHOUT_MODEL: [Entry; 3] = [StepRecorded, Step, BackwardStep];

impl Entry {
    /// Entries whose errors come through `candle_nn::optim::Optimizer`, as text.
    pub fn untyped(self) -> bool {
        matches!(self, Step | BackwardStep)
    }

    pub fn optimizer(self) -> bool {
        OPTIMIZER.contains(&self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Samples {
    /// `subsampling` / `subsampling_ggn`.
    Curvature,
    /// `subsampling_grad`.
    Gradient,
}

/// One misuse; the fixture is a 4-5-3 tanh MLP on a batch of [`BATCH`].
#[derive(Debug, Clone)]
pub enum Fault {
    Subsampling(Samples, Vec<usize>),
    CriterionIndex(usize),
    CriterionRepeats(usize),
    /// Keeps the smallest eigenvalue, an exact zero of the cross-entropy GGN.
    CriterionKeepsZero,
    DampingLength(usize),
    DampingValue(f64),
    ComplementDamping(f64),
    NoComplementDamping,
    LevenbergMarquardtBounds(f64, f64),
    /// A valid Levenberg–Marquardt damping in a step that does not evaluate
    /// the loss after it.
    LevenbergMarquardtWithoutModel,
    BootstrapEmptyGrid,
    EmptyGroup,
    ParamInTwoGroups,
    StrangerParam(Vec<usize>),
    /// `x[index] = value`.
    Input(usize, f64),
    /// Element `index` (mod size) of parameter `param` (mod count) set to `value`.
    Param(usize, usize, f64),
    /// MSE targets with `y[index] = value`.
    Target(usize, f64),
    LearningRate(f64),
    /// Gradients of a loss computed outside `record`.
    ForeignGradients,
    /// The model of `step_with_model` fails.
    ModelFails,
    /// The model of `step_with_model` returns a non-scalar "loss".
    ModelNotScalar,
    /// The closure returns an untracked candle loss.
    UntrackedLoss,
    /// The closure returns the logits.
    ReturnsLogits,
    /// The closure returns twice the tracked loss.
    ReturnsDerived,
    HalfPrecision,
    ClassOutOfRange(u32),
    TargetLength(usize),
    FloatClasses,
    /// Per-position logits `[BATCH/2, 2, 3]` with targets `[BATCH/2, 3]`.
    PositionTargetShape,
    /// A binary cross-entropy target (entry, value) outside `[0, 1]`.
    BinaryTarget(usize, f64),
    /// A cross-entropy whose every target is the ignore index.
    AllIgnored,
    /// The curvature subsampling keeps one sample, whose target is ignored.
    IgnoredSamples,
    EmptyBatch,
    InputWidth(usize),
    Nested,
}

/// The batch size of the fixture.
pub const BATCH: usize = 6;

fn non_finite() -> impl Strategy<Value = f64> {
    prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
}

fn bad_indices() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        (BATCH..BATCH + 100).prop_map(|i| vec![0, i]),
        (0..BATCH).prop_map(|i| vec![i, (i + 1) % BATCH, i]),
        Just(vec![]),
    ]
}

fn pick(entries: &'static [Entry]) -> impl Strategy<Value = Entry> {
    prop::sample::select(entries)
}

/// Every misuse paired with an entry point it reaches.
pub fn misuse() -> impl Strategy<Value = (Fault, Entry)> {
    use Fault::*;
    let with = |fault: Fault, entries: &'static [Entry]| {
        pick(entries).prop_map(move |e| (fault.clone(), e))
    };
    prop_oneof![
        (bad_indices(), pick(&ALL)).prop_map(|(i, e)| (Subsampling(Samples::Curvature, i), e)),
        (bad_indices(), pick(&DIRECTIONAL))
            .prop_map(|(i, e)| (Subsampling(Samples::Gradient, i), e)),
        (0..50usize, pick(&DIRECTIONS)).prop_map(|(i, e)| (CriterionIndex(i), e)),
        (0..12usize, pick(&DIRECTIONS)).prop_map(|(i, e)| (CriterionRepeats(i), e)),
        with(CriterionKeepsZero, &COMPUTED_DIRECTIONAL),
        (prop_oneof![Just(0usize), 2..10usize], pick(&DAMPED))
            .prop_map(|(n, e)| (DampingLength(n), e)),
        (
            prop_oneof![Just(f64::NAN), Just(f64::NEG_INFINITY), -1e3..-1e-9f64],
            pick(&DAMPED)
        )
            .prop_map(|(d, e)| (DampingValue(d), e)),
        (
            prop_oneof![Just(f64::NAN), Just(0.0), -1e3..0.0f64],
            pick(&DAMPED)
        )
            .prop_map(|(d, e)| (ComplementDamping(d), e)),
        with(NoComplementDamping, &DAMPED),
        (
            prop_oneof![
                Just((f64::NAN, 1.0)),
                Just((1.0, f64::NAN)),
                Just((2.0, 1.0)),
                Just((-1.0, 1.0))
            ],
            pick(&ADAPTIVE)
        )
            .prop_map(|((min, max), e)| (LevenbergMarquardtBounds(min, max), e)),
        with(LevenbergMarquardtWithoutModel, &WITHOUT_MODEL),
        with(BootstrapEmptyGrid, &DAMPED),
        with(EmptyGroup, &ALL),
        with(ParamInTwoGroups, &ALL),
        (prop::collection::vec(1..4usize, 1..3), pick(&ALL))
            .prop_map(|(s, e)| (StrangerParam(s), e)),
        (0..BATCH * 4, non_finite(), pick(&ALL)).prop_map(|(i, v, e)| (Input(i, v), e)),
        (0..4usize, 0..25usize, pick(&ALL)).prop_map(|(p, i, e)| (Param(p, i, f64::NAN), e)),
        // ±∞ can saturate (tanh(∞) = 1) and leave the loss finite: only a step refuses it
        (0..4usize, 0..25usize, non_finite(), pick(&OPTIMIZER))
            .prop_map(|(p, i, v, e)| (Param(p, i, v), e)),
        (0..BATCH * 3, non_finite(), pick(&ALL)).prop_map(|(i, v, e)| (Target(i, v), e)),
        (non_finite(), pick(&OPTIMIZER)).prop_map(|(lr, e)| (LearningRate(lr), e)),
        Just((ForeignGradients, Step)),
        Just((ModelFails, StepWithModel)),
        Just((ModelNotScalar, StepWithModel)),
        with(UntrackedLoss, &ALL),
        with(ReturnsLogits, &ALL),
        with(ReturnsDerived, &ALL),
        with(HalfPrecision, &ALL),
        (3..1000u32).prop_map(|c| (ClassOutOfRange(c), Record)),
        prop_oneof![0..BATCH, BATCH + 1..20].prop_map(|n| (TargetLength(n), Record)),
        Just((FloatClasses, Record)),
        Just((PositionTargetShape, Record)),
        (
            0..BATCH * 3,
            prop_oneof![-5.0..-1e-9f64, 1.0 + 1e-9..5.0, Just(f64::NAN)]
        )
            .prop_map(|(i, v)| (BinaryTarget(i, v), Record)),
        Just((AllIgnored, Record)),
        with(IgnoredSamples, &ALL),
        Just((EmptyBatch, Record)),
        prop_oneof![1..4usize, 5..9usize].prop_map(|w| (InputWidth(w), Record)),
        Just((Nested, Record)),
    ]
}

impl Fault {
    /// Whether `err` is the answer this misuse must get at `entry`, and a
    /// part of its message (all that the `Optimizer` trait passes on).
    pub fn expected(&self, entry: Entry, err: &Error) -> (bool, &'static str) {
        use Fault::*;
        match self {
            Subsampling(..) => (
                matches!(
                    err,
                    Error::SubsamplingOutOfRange { .. }
                        | Error::SubsamplingRepeated { .. }
                        | Error::SubsamplingEmpty { .. }
                ),
                "subsampling",
            ),
            CriterionIndex(_) => (
                matches!(err, Error::CriterionOutOfRange { .. }),
                "the criterion returned index",
            ),
            CriterionRepeats(_) => (matches!(err, Error::CriterionRepeated(_)), "twice"),
            CriterionKeepsZero => (
                matches!(err, Error::NonPositiveEigenvalue { .. }),
                "kept eigenvalue",
            ),
            DampingLength(_) => (
                matches!(err, Error::DampingLength { .. }),
                "the damping returned",
            ),
            DampingValue(_) => (
                matches!(err, Error::DampingValue { .. }),
                "the damping returned δ",
            ),
            ComplementDamping(_) | LevenbergMarquardtBounds(..) | BootstrapEmptyGrid => (
                matches!(err, Error::InvalidDamping(_)),
                "invalid damping settings",
            ),
            LevenbergMarquardtWithoutModel => {
                (matches!(err, Error::NeedsModel(_)), "step_with_model")
            }
            NoComplementDamping => (
                matches!(err, Error::NoComplementDamping(_)),
                "the complement step needs δ_⊥",
            ),
            EmptyGroup => (matches!(err, Error::EmptyGroup(_)), "has no parameters"),
            ParamInTwoGroups => (
                matches!(err, Error::ParamInTwoGroups { .. }),
                "one group only",
            ),
            StrangerParam(_) => (
                matches!(err, Error::ParamNotRecorded { .. }),
                "was not used by any tracked layer",
            ),
            Input(..) | Param(..) | Target(..) | LearningRate(_) => {
                (matches!(err, Error::NonFinite { .. }), "is not finite")
            }
            ForeignGradients => (false, "no live vivit::record tape"),
            ModelFails | ModelNotScalar | InputWidth(_) => (matches!(err, Error::Candle(_)), ""),
            UntrackedLoss | ReturnsLogits | ReturnsDerived if entry.untyped() => {
                (false, "no live vivit::record tape")
            }
            UntrackedLoss | ReturnsLogits | ReturnsDerived => (
                matches!(err, Error::LossNotTracked { .. }),
                "the loss was not built with vivit::loss",
            ),
            HalfPrecision => (
                matches!(err, Error::UnsupportedDType(_)),
                "unsupported dtype",
            ),
            ClassOutOfRange(_) | TargetLength(_) | FloatClasses | PositionTargetShape => {
                (matches!(err, Error::InvalidTargets { .. }), "cross_entropy")
            }
            BinaryTarget(..) => (
                matches!(err, Error::InvalidTargets { .. }),
                "is outside [0, 1]",
            ),
            AllIgnored | IgnoredSamples => (
                matches!(err, Error::AllPositionsIgnored),
                "every target position is ignored",
            ),
            Fault::EmptyBatch => (matches!(err, Error::EmptyBatch), "empty"),
            Nested => (matches!(err, Error::NestedRecord), "nest"),
        }
    }
}
