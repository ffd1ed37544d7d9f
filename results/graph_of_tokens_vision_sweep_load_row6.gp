set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_sweep_load_row6.png.tmp.27114'
$m << EOD
0.0867417 0.169416 0.0944623 0.138557 0.12029 0.137454 0.167004 0.0860754
0.131687 0.0871553 0.113189 0.125115 0.0784926 0.192348 0.132422 0.139591
EOD
set title "Attention-Aware, relative σ=1: load (last epoch, first\nseed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
