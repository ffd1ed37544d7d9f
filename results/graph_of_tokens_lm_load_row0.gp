set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_load_row0.png.tmp.20522'
$m << EOD
0.14563 0.0944824 0.136841 0.114197 0.155518 0.0921631 0.12793 0.13324
0.142517 0.179626 0.110657 0.097168 0.124756 0.100708 0.119324 0.125244
EOD
set title "SMoE (token choice): load (last epoch, first seed)"
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
