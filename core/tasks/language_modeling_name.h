#ifndef MOELAB_CORE_TASKS_LANGUAGE_MODELING_NAME_H_
#define MOELAB_CORE_TASKS_LANGUAGE_MODELING_NAME_H_

// The name of the language-modelling task (core/tasks/language_modeling.h),
// for datasets and models to state it without linking the task.

namespace moelab {

// Next-token prediction over sequences of DatasetInfo::sequence_length
// tokens from a vocabulary of DatasetInfo::vocab_size.
inline constexpr char kLanguageModelingTask[] = "language_modeling";

}  // namespace moelab

#endif  // MOELAB_CORE_TASKS_LANGUAGE_MODELING_NAME_H_
